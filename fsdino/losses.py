"""Training losses of paper §3.4.3 (eq. 6-8): Dice + BCE on the prior and the final mask."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

IGNORE_INDEX = 255


class LossTerms(NamedTuple):
    """``total`` = ``final`` + ``prior`` (eq. 8); ``prior`` is 0 for variants without a prior mask."""

    total: torch.Tensor
    final: torch.Tensor
    prior: torch.Tensor


def _valid_and_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = (target != IGNORE_INDEX).float()
    return valid, (target == 1).float() * valid


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss averaged over the batch, ignore pixels (255) excluded.

    Args:
        logits: B×1×H×W (or B×H×W) mask logits.
        target: B×H×W with values {0, 1, 255}.
    """
    valid, positive = _valid_and_target(target)
    probs = torch.sigmoid(logits.reshape(target.shape).float()) * valid
    intersection = (probs * positive).flatten(1).sum(1)
    denominator = probs.flatten(1).sum(1) + positive.flatten(1).sum(1)
    return (1 - (2 * intersection + smooth) / (denominator + smooth)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the valid pixels (255 ignored) of the batch."""
    valid, positive = _valid_and_target(target)
    per_pixel = F.binary_cross_entropy_with_logits(logits.reshape(target.shape).float(), positive, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Dice + L_BCE (eq. 6 / eq. 7)."""
    return dice_loss(logits, target) + bce_loss(logits, target)


def fsdino_loss(mask_logits: torch.Tensor, prior_logits: torch.Tensor | None, target: torch.Tensor) -> LossTerms:
    """Eq. 8: L = L_prior + L_final, both at the query's input resolution.

    Args:
        mask_logits: B×1×H×W final logits.
        prior_logits: B×1×H×W prior-mask logits, or ``None`` (compact variants: L_prior = 0).
        target: B×H×W query mask with values {0, 1, 255}.
    """
    final = dice_bce(mask_logits, target)
    prior = dice_bce(prior_logits, target) if prior_logits is not None else final.new_zeros(())
    return LossTerms(total=final + prior, final=final, prior=prior)
