import pytest
import torch

from fsdino.checkpoints import segmenter_state
from fsdino.losses import fsdino_loss
from fsdino.models.build import build_fsdino
from tests.conftest import TINY_SIZE, tiny_config

VARIANTS = ("ba_pcs", "ba_svp_pcs", "full")


def episode(batch=2, shots=1, size=TINY_SIZE, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.rand(batch, 3, size, size, generator=generator)
    supports = torch.rand(batch, shots, 3, size, size, generator=generator)
    masks = torch.zeros(batch, shots, size, size)
    masks[..., 10:40, 20:50] = 1
    return query, supports, masks


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shots", [1, 3])
def test_forward_shapes(tiny_models, variant, shots):
    out = tiny_models[variant](*episode(shots=shots))
    assert out.mask_logits.shape == (2, 1, TINY_SIZE, TINY_SIZE)
    if variant == "full":
        assert out.prior_logits.shape == (2, 1, TINY_SIZE, TINY_SIZE)
    else:
        assert out.prior_logits is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_trainable_part_and_never_the_encoder(tiny_models, variant):
    model = tiny_models[variant]
    model.train()
    model.zero_grad()
    query, supports, masks = episode()
    out = model(query, supports, masks)
    target = torch.zeros(2, TINY_SIZE, TINY_SIZE, dtype=torch.long)
    target[:, 10:40, 20:50] = 1
    fsdino_loss(out.mask_logits, out.prior_logits, target).total.backward()
    assert not model.encoder.training
    assert all(p.grad is None for p in model.encoder.parameters())
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_shot_order_does_not_matter_and_a_repeated_shot_equals_one_shot(tiny_models, variant):
    model = tiny_models[variant]
    query, supports, masks = episode(batch=1, shots=3)
    with torch.no_grad():
        forward = model(query, supports, masks).mask_logits
        reversed_ = model(query, supports.flip(1), masks.flip(1)).mask_logits
        one = model(query, supports[:, :1], masks[:, :1]).mask_logits
        twice = model(query, supports[:, [0, 0]], masks[:, [0, 0]]).mask_logits
    assert torch.allclose(forward, reversed_, atol=1e-4)
    assert torch.allclose(one, twice, atol=1e-4)


def test_supports_change_the_prediction(tiny_models):
    model = tiny_models["full"]
    query, supports, masks = episode(batch=1)
    other_masks = torch.zeros_like(masks)
    other_masks[..., 45:65, 0:20] = 1
    with torch.no_grad():
        a = model(query, supports, masks).mask_logits
        b = model(query, supports, other_masks).mask_logits
    assert not torch.allclose(a, b)


def test_a_support_set_encoded_once_serves_a_batch_of_queries(tiny_models):
    model = tiny_models["full"]
    query, supports, masks = episode(batch=2)
    with torch.no_grad():
        cached = model.encode_support(supports[:1], masks[:1])
        batched = model.segment(query, cached).mask_logits
        explicit = model(query, supports[:1].expand(2, -1, -1, -1, -1), masks[:1].expand(2, -1, -1, -1)).mask_logits
    assert torch.allclose(batched, explicit, atol=1e-5)


def test_rejects_an_unknown_variant(tiny_models):
    model = tiny_models["full"]
    with pytest.raises(ValueError, match="variant must be one of"):
        type(model)(encoder=model.encoder, adapter=model.adapter, decoder=model.decoder, variant="huge")


def test_a_seeded_build_draws_the_same_initial_weights_and_leaves_the_global_rng_alone():
    config = tiny_config("full")
    torch.manual_seed(123)
    first = build_fsdino(config, seed=7)
    after_first = torch.rand(1)
    torch.manual_seed(999)  # another global state: a seeded build must not depend on it
    second = build_fsdino(config, seed=7)
    third = build_fsdino(config, seed=8)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_first)  # the build consumed nothing from the caller's RNG
    states = [segmenter_state(model) for model in (first, second, third)]
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name
    assert any(not torch.equal(tensor, states[2][name]) for name, tensor in states[0].items())
