"""SAM's image encoder as the distillation teacher (paper §3.3).

The teacher sees the same square image as the student (resized to its own input size, no padding, so
that teacher and student cells cover the same pixels) and is normalised the way SAM normalises 0-255
pixels. Its 256×(S/16)×(S/16) embedding is brought to the student's grid by area interpolation (the
mean over the teacher cells each student cell covers).
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from torch.nn import functional as F

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
SAM_PATCH_SIZE = 16

#: SAM encoder sizes (segment_anything.build_sam), plus ``tiny`` for CPU demos and tests.
TEACHER_ARCHS: dict[str, dict] = {
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": (7, 15, 23, 31)},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": (5, 11, 17, 23)},
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "tiny": {"embed_dim": 96, "depth": 2, "num_heads": 3, "global_attn_indexes": (1,)},
}


def build_sam_image_encoder(arch: str, image_size: int = 1024) -> ImageEncoderViT:
    """SAM's ``ImageEncoderViT`` with the official hyper-parameters of ``arch``."""
    sizes = TEACHER_ARCHS[arch]
    return ImageEncoderViT(
        img_size=image_size,
        patch_size=SAM_PATCH_SIZE,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        qkv_bias=True,
        use_rel_pos=True,
        window_size=14 if arch != "tiny" else 7,
        out_chans=256,
        **sizes,
    )


class SamTeacher(nn.Module):
    """Frozen SAM image encoder: B×3×H×W images in [0, 1] → B×256×(S/16)×(S/16) embeddings."""

    def __init__(self, encoder: ImageEncoderViT, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def grid_size(self) -> int:
        return self.image_size // SAM_PATCH_SIZE

    def train(self, mode: bool = True) -> SamTeacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.encoder((images * 255.0 - self.mean) / self.std)


def to_student_grid(embeddings: torch.Tensor, grid: int) -> torch.Tensor:
    """B×256×g×g teacher embeddings → B×256×grid×grid by area interpolation (cell means)."""
    if embeddings.shape[-1] == grid and embeddings.shape[-2] == grid:
        return embeddings
    return F.interpolate(embeddings.float(), size=(grid, grid), mode="area")
