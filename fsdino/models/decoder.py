"""SAM's mask decoder driven by meta-visual prompts (paper §3.4.2).

We reuse ``segment_anything.modeling.MaskDecoder`` and ``TwoWayTransformer`` at SAM's sizes so that the
official SAM ViT-H weights load by key, but we call their parts ourselves: ``MaskDecoder.predict_masks``
repeats the image embedding once per prompt (``repeat_interleave``), which is wrong for a batch of
several images that each carry their own prompts.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer
from torch import nn

from fsdino.models.layers import LayerNorm2d

PROMPT_DIM = 256


class LearnableFourierPositionalEncoding(nn.Module):
    """Random-Fourier positional encoding whose Gaussian matrix is a trainable parameter.

    SAM keeps the 2×128 Gaussian matrix as a fixed buffer; the paper makes it learnable (§3.4.2). It is
    initialised from SAM's ``prompt_encoder.pe_layer`` when a SAM checkpoint is loaded.

    Args:
        num_pos_feats: frequencies; the encoding has 2·num_pos_feats channels (256).
        scale: standard deviation of the initial Gaussian matrix.
    """

    def __init__(self, num_pos_feats: int = PROMPT_DIM // 2, scale: float = 1.0) -> None:
        super().__init__()
        self.gaussian_matrix = nn.Parameter(scale * torch.randn(2, num_pos_feats))

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """size: (h, w) of the grid → 2·num_pos_feats×h×w encoding of the cell centres."""
        height, width = size
        device = self.gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y], dim=-1) * 2 - 1  # h×w×2 in [-1, 1], (x, y) as in SAM
        projected = 2 * math.pi * coords @ self.gaussian_matrix.float()
        return torch.cat([projected.sin(), projected.cos()], dim=-1).permute(2, 0, 1)


def build_mask_downscaling(embed_dim: int = PROMPT_DIM, mask_in_chans: int = 16) -> nn.Sequential:
    """SAM's prompt-encoder mask downscaling: B×1×4h×4w mask logits → B×embed_dim×h×w dense prompt."""
    return nn.Sequential(
        nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
        LayerNorm2d(mask_in_chans // 4),
        nn.GELU(),
        nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
        LayerNorm2d(mask_in_chans),
        nn.GELU(),
        nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
    )


def build_sam_mask_decoder() -> MaskDecoder:
    """SAM's mask decoder at the sizes every official SAM checkpoint uses."""
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


class PromptedMaskDecoder(nn.Module):
    """Single-mask SAM decoding with batch-correct prompts.

    Only the first mask token (SAM's single-mask output) is decoded. The three multi-mask hypernetwork
    MLPs and the IoU head get no loss, so they are frozen (kept only so SAM's weights load by key): this
    leaves ≈3.5M trainable decoder parameters, and DDP needs no ``find_unused_parameters``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask_decoder = build_sam_mask_decoder()
        self.positional_encoding = LearnableFourierPositionalEncoding()
        for module in (*self.mask_decoder.output_hypernetworks_mlps[1:], self.mask_decoder.iou_prediction_head):
            module.requires_grad_(False)

    def forward(
        self, image_embeddings: torch.Tensor, sparse_prompts: torch.Tensor, dense_prompts: torch.Tensor
    ) -> torch.Tensor:
        """Decode one mask per image.

        Args:
            image_embeddings: B×256×h×w (bottleneck-adapter output).
            sparse_prompts: B×N×256 prompt tokens (N ≥ 0).
            dense_prompts: B×256×h×w dense prompt embedding.

        Returns:
            B×1×4h×4w mask logits.
        """
        decoder = self.mask_decoder
        batch, channels, height, width = image_embeddings.shape
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompts], dim=1)
        positional = self.positional_encoding((height, width)).to(image_embeddings.dtype)
        hidden, src = decoder.transformer(
            image_embeddings + dense_prompts, positional.unsqueeze(0).expand(batch, -1, -1, -1), tokens
        )
        mask_token = hidden[:, 1, :]  # B×256: SAM's single-mask output token
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(batch, channels, height, width))
        weights = decoder.output_hypernetworks_mlps[0](mask_token)  # B×32
        return torch.einsum("bc,bchw->bhw", weights, upscaled).unsqueeze(1)
