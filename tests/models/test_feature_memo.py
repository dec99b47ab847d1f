"""The frozen encoder's feature memo: exact keys, the fp16 rounding it promises, counting, and its state."""

from __future__ import annotations

import pytest
import torch

from fsdino.models.build import build_encoder
from fsdino.models.feature_memo import FeatureMemo, image_key
from tests.conftest import TINY_SIZE, tiny_config


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(tiny_config().encoder, TINY_SIZE)


def test_image_key_depends_on_bytes_shape_and_dtype():
    image = torch.rand(3, 14, 14)
    assert image_key(image) == image_key(image.clone())
    changed = image.clone()
    changed[0, 0, 0] += 1e-6
    assert image_key(changed) != image_key(image)
    assert image_key(image.reshape(3, 7, 28)) != image_key(image)
    assert image_key(image.double()) != image_key(image)


def test_memo_returns_the_encoder_output_rounded_to_its_dtype_and_counts(encoder):
    images = torch.rand(3, 3, TINY_SIZE, TINY_SIZE)
    plain = encoder(images)
    memo = FeatureMemo()
    encoder.memo = memo
    try:
        first = encoder(images[:2])
        assert (memo.hits, memo.misses, len(memo)) == (0, 2, 2)
        second = encoder(images)  # two hits, one miss computed alone
        assert (memo.hits, memo.misses, len(memo)) == (2, 3, 3)
    finally:
        encoder.memo = None
    for got in (first, second):
        count = got.layer3.shape[0]
        assert got.layer3.dtype == torch.float32
        torch.testing.assert_close(got.layer3, plain.layer3[:count].half().float(), rtol=0, atol=0)
        torch.testing.assert_close(got.last, plain.last[:count].half().float(), rtol=0, atol=0)
    assert (second.last[:2] == first.last).all()


def test_memo_stops_storing_at_max_entries_but_still_answers(encoder):
    memo = FeatureMemo(max_entries=1)
    images = torch.rand(2, 3, TINY_SIZE, TINY_SIZE)
    encoder.memo = memo
    try:
        features = encoder(images)
    finally:
        encoder.memo = None
    assert len(memo) == 1 and features.last.shape[0] == 2
    assert images[0] in memo and images[1] not in memo


def test_state_round_trip_and_bad_states(encoder):
    memo = FeatureMemo()
    images = torch.rand(2, 3, TINY_SIZE, TINY_SIZE)
    encoder.memo = memo
    try:
        before = encoder(images)
        encoder.memo = restored = FeatureMemo.from_state(memo.state())
        after = encoder(images)
    finally:
        encoder.memo = None
    assert restored.hits == 2 and restored.misses == 0 and restored.dtype == torch.float16
    assert torch.equal(before.last, after.last) and torch.equal(before.layer3, after.layer3)
    state = memo.state()
    with pytest.raises(ValueError, match="keys"):
        FeatureMemo.from_state({**state, "keys": state["keys"][:1]})
    with pytest.raises(ValueError, match="empty"):
        FeatureMemo().state()


def test_truncated_encoder_ignores_the_memo():
    truncated = build_encoder(tiny_config().encoder, TINY_SIZE, blocks=3)
    truncated.memo = FeatureMemo()
    features = truncated(torch.rand(1, 3, TINY_SIZE, TINY_SIZE))
    assert features.last is None and len(truncated.memo) == 0
