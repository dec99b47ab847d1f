"""The paper's parameter budgets, checked with DINOv2-B at 518 px (random weights)."""

import pytest

from fsdino.config import EncoderConfig, ModelConfig
from fsdino.models.build import build_fsdino
from fsdino.models.summary import parameter_counts


@pytest.fixture(scope="module")
def counts():
    def build(variant):
        config = ModelConfig(variant=variant, encoder=EncoderConfig(weights="random"), image_size=518)
        return parameter_counts(build_fsdino(config))

    return {variant: build(variant) for variant in ("ba_pcs", "ba_svp_pcs", "full")}


def test_adapter_is_about_1m(counts):
    assert 1_000_000 <= counts["full"]["adapter"] <= 1_400_000


def test_compact_segmenter_is_about_5m(counts):
    assert 4_500_000 <= counts["ba_svp_pcs"]["total_trainable"] <= 6_000_000


def test_4d_correlation_module_is_about_4m(counts):
    assert 2_800_000 <= counts["full"]["correlation_4d"] <= 5_000_000


def test_full_segmenter_is_about_9m_and_the_encoder_is_dinov2_b(counts):
    assert 8_000_000 <= counts["full"]["total_trainable"] <= 9_500_000
    assert 86_000_000 <= counts["full"]["encoder"] <= 87_000_000


def test_decoder_has_sams_size(counts):
    # SAM's mask decoder has 4.06M parameters; the PE matrix adds 256.
    assert 4_000_000 <= counts["full"]["decoder"] <= 4_100_000


def test_variants_differ_only_by_their_prompt_modules(counts):
    compact, base, full = counts["ba_svp_pcs"], counts["ba_pcs"], counts["full"]
    svp = compact["semantic_visual_prompt"]
    assert compact["total_trainable"] - base["total_trainable"] == svp - base["sparse_token"]
    assert full["total_trainable"] - compact["total_trainable"] == full["correlation_4d"]
