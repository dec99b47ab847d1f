"""Small building blocks shared by the FS-DINO modules."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a B×C×H×W tensor (as SAM's neck and mask downscaling use)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W → B×C×H×W."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def mask_to_grid(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Fraction of foreground inside each cell of a feature grid.

    Args:
        masks: B×K×H×W (or B×H×W) foreground masks in [0, 1] (ignore pixels already mapped to 0).
        size: (h, w) of the feature grid.

    Returns:
        Soft masks of shape B×K×h×w (or B×h×w): area interpolation, so a 14×14 patch that is half
        foreground weighs 0.5.
    """
    squeeze = masks.dim() == 3
    if squeeze:
        masks = masks.unsqueeze(1)
    grid = nn.functional.interpolate(masks.float(), size=size, mode="area")
    return grid.squeeze(1) if squeeze else grid
