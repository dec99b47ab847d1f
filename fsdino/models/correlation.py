"""Dense prompts from support-query 4D correlation mining (paper §3.4.1, eq. 3-5).

Shapes below use the paper's sizes (518 px, a 37×37 grid, so hw = 1369 and ⌈h/2⌉⌈w/2⌉ = 19² = 361).

1. ``S_4d = F_q F_s^T`` (eq. 3) with L2-normalised last-layer features; the support features are
   multiplied by the support mask first (our reading: without it the correlation would not know the
   class). Laid out as B×(h_s w_s)×h_q×w_q: each query position holds its correlation to the whole
   support image.
2. 1×1 conv 1369→512 and 3×3 conv 512→361 with stride 2 → B×361×19×19 (support axis 19×19 in the
   channels, query axis 19×19 in space).
3. Two views: S¹ (query in space, support in channels) gets a depthwise 3×3 conv (eq. 4); S² (support in
   space, query in channels) gets a pointwise conv (eq. 5); the results are added back in S¹'s layout.
4. Per-channel addition of S_pcs (resized to 19×19) to every channel.
5. 3×3 convolutions upsample to 4× the *feature* grid (148×148: the size SAM's mask downscaling turns
   back into a 37×37 dense embedding) and reduce to one channel: the prior-mask logits.

K shots: the module runs once per shot; :class:`~fsdino.models.fsdino.FSDINO` averages the per-shot
prior-mask logits. About 3.7M parameters at 518 px.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F


def correlation_4d(query_features: torch.Tensor, support_features: torch.Tensor) -> torch.Tensor:
    """Cosine 4D correlation between a query and one support.

    Args:
        query_features: B×C×h×w.
        support_features: B×C×h×w, already masked by the support mask.

    Returns:
        B×(h·w)×h×w: channel index = support position (row-major), space = query position.
    """
    batch, _channels, height, width = query_features.shape
    query = F.normalize(query_features.flatten(2), dim=1)  # B×C×hw_q
    support = F.normalize(support_features.flatten(2), dim=1)  # B×C×hw_s (zero vectors stay zero)
    corr = torch.einsum("bcs,bcq->bsq", support, query)  # B×hw_s×hw_q
    return corr.reshape(batch, -1, height, width)


def swap_query_support(corr: torch.Tensor) -> torch.Tensor:
    """Exchange the roles of the channel and spatial axes of a square 4D correlation.

    B×(h_s·w_s)×h_q×w_q (S¹: support in channels) ↔ B×(h_q·w_q)×h_s×w_s (S²: query in channels).
    Requires h_s·w_s = h_q·w_q with square grids; applying it twice is the identity.
    """
    batch, positions, height, width = corr.shape
    side = math.isqrt(positions)
    if side * side != positions or height * width != positions:
        raise ValueError(f"expected a square 4D correlation, got {tuple(corr.shape)}")
    return corr.flatten(2).transpose(1, 2).reshape(batch, height * width, side, side)


def _upsample_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.GroupNorm(8 if out_ch % 8 == 0 else 1, out_ch),
        nn.ReLU(inplace=True),
    )


class Correlation4D(nn.Module):
    """The 4D correlation mining module: (query, masked support, S_pcs) → prior-mask logits.

    Args:
        grid_size: side of the square feature grid (image_size / 14; 37 at 518 px).
        hidden_dim: output channels of the first 1×1 reduction (512).
        up_dims: channel widths of the three upsampling convolutions (at 1×, 2× and 4× the grid).
    """

    def __init__(self, *, grid_size: int = 37, hidden_dim: int = 512, up_dims: tuple[int, ...] = (256, 128, 64)):
        super().__init__()
        self.grid_size = grid_size
        self.half_grid = math.ceil(grid_size / 2)
        positions = grid_size * grid_size
        reduced = self.half_grid * self.half_grid  # 361 at a 37 grid
        self.reduce = nn.Sequential(
            nn.Conv2d(positions, hidden_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, reduced, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.depthwise = nn.Conv2d(reduced, reduced, kernel_size=3, padding=1, groups=reduced)
        self.pointwise = nn.Conv2d(reduced, reduced, kernel_size=1)
        widths = (reduced, *up_dims)
        self.upsample = nn.ModuleList(_upsample_block(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Conv2d(up_dims[-1], 1, kernel_size=1)

    def forward(self, query_features: torch.Tensor, support_features: torch.Tensor, pcs: torch.Tensor) -> torch.Tensor:
        """Prior-mask logits for one shot.

        Args:
            query_features: B×C×h×w last-layer query features.
            support_features: B×C×h×w last-layer support features times the support mask.
            pcs: B×1×h×w prototype cosine similarity.

        Returns:
            B×1×4h×4w prior-mask logits (148×148 at 518 px).
        """
        height, width = query_features.shape[-2:]
        if (height, width) != (self.grid_size, self.grid_size):
            raise ValueError(f"expected a {self.grid_size}×{self.grid_size} feature grid, got {height}×{width}")
        corr = self.reduce(correlation_4d(query_features, support_features))  # B×361×19×19
        half_h, half_w = corr.shape[-2:]
        s1 = self.depthwise(corr)  # eq. 4: query spatial structure
        s2 = self.pointwise(swap_query_support(corr))  # eq. 5: mixes query positions, support in space
        fused = (
            s1
            + swap_query_support(s2)
            + F.interpolate(pcs, size=(half_h, half_w), mode="bilinear", align_corners=False)
        )
        x = F.interpolate(fused, size=(height, width), mode="bilinear", align_corners=False)
        for index, block in enumerate(self.upsample):
            if index:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(x)
        return self.head(x)
