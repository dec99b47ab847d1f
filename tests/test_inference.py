import numpy as np
import pytest

from fsdino.inference import Segmenter
from tests.conftest import TINY_SIZE


@pytest.fixture
def segmenter(tiny_models):
    return Segmenter(tiny_models["full"], TINY_SIZE, batch_size=2)


def scene(height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 1
    return image, mask


def test_masks_come_back_at_each_querys_original_size(segmenter):
    image, mask = scene(80, 100, 0)
    segmenter.set_support([image], [mask])
    queries = [scene(60, 90, 1)[0], scene(120, 70, 2)[0], scene(70, 70, 3)[0]]
    masks = segmenter.segment(queries)
    assert [m.shape for m in masks] == [(60, 90), (120, 70), (70, 70)]
    assert all(m.dtype == bool for m in masks)


def test_support_is_encoded_once_for_many_queries(segmenter, monkeypatch):
    calls = []
    original = segmenter.model.encode_support
    monkeypatch.setattr(segmenter.model, "encode_support", lambda *a: calls.append(1) or original(*a))
    image, mask = scene(70, 70, 0)
    segmenter.set_support([image, image], [mask, mask])
    segmenter.predict([scene(70, 70, i)[0] for i in range(5)])
    segmenter.predict([scene(70, 70, 9)[0]])
    assert len(calls) == 1


def test_batching_does_not_change_results(tiny_models):
    image, mask = scene(70, 70, 0)
    queries = [scene(70, 84, i)[0] for i in range(3)]
    results = []
    for batch_size in (1, 3):
        segmenter = Segmenter(tiny_models["full"], TINY_SIZE, batch_size=batch_size)
        segmenter.set_support([image], [mask])
        results.append(segmenter.predict(queries))
    for a, b in zip(*results, strict=True):
        assert np.allclose(a, b, atol=1e-5)


def test_predict_needs_a_support_set(segmenter):
    with pytest.raises(RuntimeError, match="set_support"):
        segmenter.predict([scene(70, 70, 0)[0]])
