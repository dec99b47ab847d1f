"""The bottleneck adapter (paper §3.3.1): DINOv2 layer-3 features → SAM-like image embeddings."""

from __future__ import annotations

import torch
from torch import nn

from fsdino.models.layers import LayerNorm2d


class SelfAttentionBlock(nn.Module):
    """A pre-norm Transformer encoder block (Vaswani et al.): multi-head self-attention + FFN.

    Args:
        dim: token dimension (128 in the paper; Q, K, V ∈ R^{128×128}).
        num_heads: attention heads.
        mlp_dim: inner dimension of the feed-forward network (512 in the paper).
    """

    def __init__(self, dim: int = 128, num_heads: int = 8, mlp_dim: int = 512) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: B×N×dim → B×N×dim."""
        x = self.norm1(tokens)
        tokens = tokens + self.attn(x, x, x, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


class BottleneckAdapter(nn.Module):
    """1×1 C→256, 3×3 256→256, 1×1 256→128, two self-attention blocks (dim 128, FFN 512), 1×1 128→256.

    LayerNorm2d + GELU follow the first two convolutions and a LayerNorm2d ends the module, mirroring
    SAM's encoder neck, whose normalised output is what the adapter is distilled to (our reading: the
    paper names the convolutions only). With C = 768 (ViT-B) the adapter has ≈1.25M parameters.

    Args:
        in_dim: channels of the DINOv2 layer-3 features (384 / 768 / 1024 for ViT-S / B / L).
        out_dim: SAM's embedding dimension (256).
        hidden_dim: width after the first two convolutions (256).
        bottleneck_dim: width inside the attention blocks (128).
        num_blocks: number of self-attention blocks (2).
        mlp_dim: FFN inner width (512).
    """

    def __init__(
        self,
        *,
        in_dim: int = 768,
        out_dim: int = 256,
        hidden_dim: int = 256,
        bottleneck_dim: int = 128,
        num_blocks: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 512,
    ) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, kernel_size=1),
            LayerNorm2d(hidden_dim),
            nn.GELU(),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1),
            LayerNorm2d(hidden_dim),
            nn.GELU(),
            nn.Conv2d(hidden_dim, bottleneck_dim, kernel_size=1),
        )
        self.blocks = nn.ModuleList(SelfAttentionBlock(bottleneck_dim, num_heads, mlp_dim) for _ in range(num_blocks))
        self.expand = nn.Sequential(nn.Conv2d(bottleneck_dim, out_dim, kernel_size=1), LayerNorm2d(out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: B×C×h×w (DINOv2 block-2 output) → B×256×h×w image embedding."""
        x = self.reduce(features)
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B×hw×128
        for block in self.blocks:
            tokens = block(tokens)
        x = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.expand(x)
