"""Analytic FLOPs of a plain ViT forward (DINOv2 in timm), and bf16 peaks of common GPUs.

One multiply-add counts as 2 FLOPs. For an H×W image, patch size p, width D, depth L, MLP ratio r
(4 for DINOv2-S/B/L), P = (H/p)·(W/p) patches and N = P + T tokens (T prefix tokens: 1 class token for
DINOv2, plus registers where a model has them):

* patch embedding (a p×p convolution 3 → D, one output per patch):   2·P·(3·p²)·D
* per block:
    - q, k, v projections  N·D → N·3D:                                 2·3·N·D²
    - scores Q·Kᵀ over all heads:                                      2·N²·D
    - weighted values A·V:                                             2·N²·D
    - output projection:                                               2·N·D²
    - MLP D → r·D → D:                                                 2·2·r·N·D²
  i.e. 2·(4 + 2r)·N·D² + 4·N²·D, which is 24·N·D² + 4·N²·D for r = 4.

FLOPs(image) = 2·P·3·p²·D + L·(2·(4 + 2r)·N·D² + 4·N²·D), times the batch size. LayerNorm, softmax,
GELU, biases, LayerScale, residual adds and the position-embedding resampling are elementwise
(O(N·D)) and left out, as :class:`torch.utils.flop_counter.FlopCounterMode` leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VitShape:
    """The sizes that set a ViT's FLOPs."""

    embed_dim: int
    depth: int
    patch_size: int = 14
    mlp_ratio: float = 4.0
    prefix_tokens: int = 1


#: timm's DINOv2 backbones (no registers, class token only).
DINOV2_SHAPES: dict[str, VitShape] = {
    "vit_small_patch14_dinov2": VitShape(embed_dim=384, depth=12),
    "vit_base_patch14_dinov2": VitShape(embed_dim=768, depth=12),
    "vit_large_patch14_dinov2": VitShape(embed_dim=1024, depth=24),
}

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched by
#: substring of ``torch.cuda.get_device_name`` (first match wins, so the specific names come first).
GPU_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)


def vit_forward_flops(shape: VitShape, image_size: int | tuple[int, int], batch: int = 1) -> int:
    """FLOPs of ``batch`` forward passes of the patch embedding and all blocks (formula in the module doc)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height % shape.patch_size or width % shape.patch_size:
        raise ValueError(f"image size {height}×{width} is not a multiple of the patch size {shape.patch_size}")
    patches = (height // shape.patch_size) * (width // shape.patch_size)
    tokens = patches + shape.prefix_tokens
    dim = shape.embed_dim
    patch_embed = 2 * patches * 3 * shape.patch_size**2 * dim
    per_block = round(2 * (4 + 2 * shape.mlp_ratio) * tokens * dim**2) + 4 * tokens**2 * dim
    return batch * (patch_embed + shape.depth * per_block)


def dinov2_forward_flops(name: str, image_size: int, batch: int = 1) -> int:
    """:func:`vit_forward_flops` of a timm DINOv2 backbone by name."""
    return vit_forward_flops(DINOV2_SHAPES[name], image_size, batch)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The data-sheet dense bf16 peak of a GPU by name, or ``None`` when it is not in the table."""
    for key, peak in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


#: SAM image encoders (segment_anything.build_sam): width, depth, global-attention blocks; window 14.
SAM_SHAPES: dict[str, tuple[int, int, int]] = {"vit_h": (1280, 32, 4), "vit_l": (1024, 24, 4), "vit_b": (768, 12, 4)}


def sam_encoder_flops(arch: str, image_size: int = 1024, window: int = 14, batch: int = 1) -> int:
    """FLOPs of SAM's image encoder (patch 16, MLP ratio 4, windowed attention but for ``global`` blocks).

    With P = (S/16)² tokens, Pw = P padded to whole windows (⌈√P/w⌉²·w²), D the width, L blocks of which
    G global:  2·P·3·16²·D  +  L·24·P·D²  +  (L − G)·4·Pw·w²·D  +  G·4·P²·D  +  neck (1×1 conv D → 256,
    3×3 conv 256 → 256): 2·P·D·256 + 2·P·9·256². Relative-position terms are elementwise-sized and left
    out. SAM ViT-H at 1,024 px: 5.6 TFLOP (2.8 T multiply-adds, the figure usually quoted as "≈3 T").
    """
    dim, depth, global_blocks = SAM_SHAPES[arch]
    side = image_size // 16
    tokens = side * side
    padded = (-(-side // window) * window) ** 2
    per_image = (
        2 * tokens * 3 * 16**2 * dim
        + depth * 24 * tokens * dim**2
        + (depth - global_blocks) * 4 * padded * window**2 * dim
        + global_blocks * 4 * tokens**2 * dim
        + 2 * tokens * dim * 256
        + 2 * tokens * 9 * 256**2
    )
    return batch * per_image
