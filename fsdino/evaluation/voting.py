"""HSNet's K-shot voting: one prediction per support, summed and normalised by the largest vote.

HSNet (``model/hsnet.py``, ``predict_mask_nshot``) runs the model once per support with that support
alone, sums the K binary masks, divides the sum by its maximum over the image (at least 1) and keeps the
pixels at ≥ 0.5. A pixel is therefore foreground when at least half as many shots vote for it as for the
most voted pixel, not half of all K shots. It is the baseline of FS-DINO's own K-shot fusion (one forward
with the K supports pooled, ``fsdino.models.fsdino``), selected with ``shot_fusion="vote"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fsdino.config import ShotFusion

__all__ = ["VOTE_THRESHOLD", "ShotFusion", "vote_fraction"]

VOTE_THRESHOLD = 0.5


def vote_fraction(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """K H×W bool masks (one per support) → H×W float32 votes / max(largest vote, 1)."""
    if not masks:
        raise ValueError("voting needs at least one mask")
    votes = torch.stack([mask.float() for mask in masks]).sum(dim=0)
    return votes / votes.max().clamp(min=1.0)
