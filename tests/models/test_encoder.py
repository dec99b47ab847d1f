import pytest
import torch

from fsdino.config import EncoderConfig
from fsdino.models.build import build_encoder

SMALL = EncoderConfig(name="vit_small_patch14_dinov2", weights="random")


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(SMALL, image_size=70)


def test_returns_layer3_and_last_features_as_maps(encoder):
    features = encoder(torch.rand(2, 3, 70, 98))
    assert features.layer3.shape == (2, 384, 5, 7)
    assert features.last.shape == (2, 384, 5, 7)


def test_normalises_with_timm_data_config(encoder):
    assert torch.allclose(encoder.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(encoder.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_is_frozen_and_stays_in_eval_mode(encoder):
    encoder.train()
    assert not encoder.training and not encoder.vit.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_rejects_sizes_that_are_not_multiples_of_the_patch(encoder):
    with pytest.raises(ValueError, match="multiple of 14"):
        encoder(torch.rand(1, 3, 64, 64))


def test_three_block_mode_computes_only_three_blocks_and_matches_the_full_encoder(encoder):
    truncated = build_encoder(SMALL, image_size=70, blocks=3)
    assert len(truncated.vit.blocks) == 3
    images = torch.rand(1, 3, 70, 70)
    features = truncated(images)
    assert features.last is None
    assert torch.allclose(features.layer3, encoder(images).layer3, atol=1e-5)


def test_random_weights_are_identical_across_builds(encoder):
    other = build_encoder(SMALL, image_size=70)
    for (name, a), b in zip(encoder.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
