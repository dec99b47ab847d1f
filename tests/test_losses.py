import math

import torch

from fsdino.losses import bce_loss, dice_loss, fsdino_loss


def test_bce_ignores_255_pixels():
    logits = torch.tensor([[[0.0, 2.0, 100.0]]])
    target = torch.tensor([[[1, 0, 255]]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert math.isclose(bce_loss(logits, target).item(), expected, rel_tol=1e-5)


def test_dice_by_hand():
    logits = torch.tensor([[[0.0, 0.0]]])  # probabilities 0.5, 0.5
    target = torch.tensor([[[1, 0]]])
    # 1 - (2·0.5 + 1) / (1.0 + 1 + 1)
    assert math.isclose(dice_loss(logits, target).item(), 1 - 2 / 3, rel_tol=1e-5)


def test_dice_ignores_255_pixels_and_is_near_zero_for_a_perfect_prediction():
    target = torch.tensor([[[1, 1, 0, 255]]])
    logits = torch.tensor([[[50.0, 50.0, -50.0, 50.0]]])
    assert dice_loss(logits, target).item() < 1e-6


def test_total_is_prior_plus_final():
    target = torch.randint(0, 2, (2, 8, 8))
    final, prior = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    terms = fsdino_loss(final, prior, target)
    assert torch.isclose(terms.total, terms.final + terms.prior)
    assert fsdino_loss(final, None, target).prior.item() == 0.0
