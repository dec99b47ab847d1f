"""The frozen DINOv2 encoder (timm), returning the features FS-DINO needs as B×C×h×w maps."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from fsdino.config import PATCH_SIZE
from fsdino.models.feature_memo import FeatureMemo

#: Block index of "DINOv2's 3rd layer" (paper §2.1, §3.3): the output of the third Transformer block.
ADAPTER_LAYER = 2


class EncoderFeatures(NamedTuple):
    """Patch features of one forward pass.

    ``layer3``: B×C×h×w output of block 2, un-normalised (the adapter's input).
    ``last``: B×C×h×w output of the last block after the final LayerNorm (DINOv2's
    ``x_norm_patchtokens``; the prompts' input), or ``None`` in ``blocks=3`` mode.
    """

    layer3: torch.Tensor
    last: torch.Tensor | None


class DinoV2Encoder(nn.Module):
    """A frozen timm DINOv2 ViT that maps images in [0, 1] to patch-feature maps.

    The module normalises its input with the mean/std of timm's data config for the model, stays in
    ``eval()`` whatever ``train()`` is called with, and never requires gradients.

    Args:
        vit: a timm ``VisionTransformer`` built with ``dynamic_img_size=True`` (any multiple of 14).
        mean: per-channel mean from ``timm.data.resolve_model_data_config``.
        std: per-channel std from the same config.
        blocks: ``None`` to run every block, or ``3`` to run only the first three (distillation: the
            other blocks are never computed and ``last`` is ``None``).

    ``memo`` (default ``None``) may hold a :class:`~fsdino.models.feature_memo.FeatureMemo`: the full
    encoder then computes only the images it has not seen (exact: the encoder is frozen).
    """

    def __init__(
        self,
        vit: nn.Module,
        *,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        blocks: int | None = None,
    ) -> None:
        super().__init__()
        if blocks not in (None, ADAPTER_LAYER + 1):
            raise ValueError(f"blocks must be None or {ADAPTER_LAYER + 1}, got {blocks}")
        self.vit = vit
        self.blocks = blocks
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.memo: FeatureMemo | None = None
        self.requires_grad_(False)
        self.eval()

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    def train(self, mode: bool = True) -> DinoV2Encoder:
        """Frozen: always stays in eval mode (no dropout, no drop-path)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> EncoderFeatures:
        """images: B×3×H×W in [0, 1], H and W multiples of 14 → :class:`EncoderFeatures` on an (H/14)×(W/14) grid."""
        height, width = images.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f"image size must be a multiple of {PATCH_SIZE}, got {height}×{width}")
        if self.blocks is not None:
            with torch.no_grad():
                (layer3,) = self.vit.forward_intermediates(
                    self._normalise(images), indices=[ADAPTER_LAYER], output_fmt="NCHW", intermediates_only=True,
                    stop_early=True,
                )  # fmt: skip
            return EncoderFeatures(layer3=layer3, last=None)
        if self.memo is not None:
            return EncoderFeatures(*self.memo.lookup(images, self._full))
        return EncoderFeatures(*self._full(images))

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    @torch.no_grad()
    def _full(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×H×W → (layer3, last) of every block's pass."""
        layer3, last = self.vit.forward_intermediates(
            self._normalise(images), indices=[ADAPTER_LAYER, self.depth - 1], output_fmt="NCHW",
            intermediates_only=True,
        )  # fmt: skip
        last = self.vit.norm(last.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return layer3, last
