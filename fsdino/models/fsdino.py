"""FS-DINO: wires the frozen encoder, the bottleneck adapter, the meta-visual prompt generator and the
mask decoder together (paper Fig. 3). Sizes live in the parts; :mod:`fsdino.models.build` builds them.

Variants (Table 4):

* ``ba_pcs``: adapter + PCS dense prompt; the sparse prompt is one learnable token initialised from SAM's
  ``not_a_point_embed`` ("initial sparse prompt embedding from SAM", §4.3 — our reading).
* ``ba_svp_pcs``: the compact ≈5M model; the sparse prompt is the semantic visual prompt.
* ``full``: adds 4D correlation mining; its prior mask (which already contains S_pcs) is the dense prompt.

The dense prompt is always SAM's mask downscaling applied to a map at 4× the feature grid: S_pcs
upsampled bilinearly (compact variants) or the prior-mask logits (``full``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.correlation import Correlation4D
from fsdino.models.decoder import PROMPT_DIM, PromptedMaskDecoder, build_mask_downscaling
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.layers import mask_to_grid
from fsdino.models.prompts import SemanticVisualPrompt, masked_average, prototype_cosine_similarity

VARIANTS = ("ba_pcs", "ba_svp_pcs", "full")


class SupportFeatures(NamedTuple):
    """Everything the query side needs from a support set; computed once and reusable across queries.

    ``prototype``: B×C masked average of the last-layer support features over all K shots.
    ``masked_features``: B×K×C×h×w last-layer support features times the soft support mask (``full``
    only, else ``None``).
    """

    prototype: torch.Tensor
    masked_features: torch.Tensor | None

    def expand(self, batch: int) -> SupportFeatures:
        """Repeat a support set encoded with B = 1 for a batch of ``batch`` queries."""
        masked = self.masked_features
        return SupportFeatures(
            self.prototype.expand(batch, -1),
            None if masked is None else masked.expand(batch, -1, -1, -1, -1),
        )


class FSDINOOutput(NamedTuple):
    """``mask_logits``: B×1×H×W final logits; ``prior_logits``: B×1×H×W (``full`` only, else ``None``)."""

    mask_logits: torch.Tensor
    prior_logits: torch.Tensor | None


class FSDINO(nn.Module):
    """The few-shot segmenter on top of a frozen DINOv2 encoder.

    Args:
        encoder: frozen :class:`DinoV2Encoder` running all blocks.
        adapter: bottleneck adapter (layer-3 features → 256-d image embedding).
        decoder: SAM's mask decoder with the learnable positional encoding.
        variant: one of :data:`VARIANTS`.
        correlation: the 4D correlation module (required for ``full``).
    """

    def __init__(
        self,
        *,
        encoder: DinoV2Encoder,
        adapter: BottleneckAdapter,
        decoder: PromptedMaskDecoder,
        variant: str = "full",
        correlation: Correlation4D | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if (variant == "full") != (correlation is not None):
            raise ValueError("the 'full' variant needs a Correlation4D module and the others must not have one")
        self.variant = variant
        self.encoder = encoder
        self.adapter = adapter
        self.decoder = decoder
        self.mask_downscaling = build_mask_downscaling()
        self.correlation = correlation
        if variant == "ba_pcs":
            self.semantic_prompt = None
            self.sparse_token = nn.Parameter(torch.randn(1, 1, PROMPT_DIM) * 0.02)
        else:
            self.semantic_prompt = SemanticVisualPrompt(encoder.embed_dim, PROMPT_DIM)
            self.sparse_token = None

    def train(self, mode: bool = True) -> FSDINO:
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encode_support(self, support_images: torch.Tensor, support_masks: torch.Tensor) -> SupportFeatures:
        """Encode a K-shot support set.

        Args:
            support_images: B×K×3×H×W in [0, 1].
            support_masks: B×K×H×W foreground in {0, 1} (ignore pixels mapped to 0 by the caller).
        """
        batch, shots = support_images.shape[:2]
        features = self.encoder(support_images.flatten(0, 1)).last  # BK×C×h×w
        features = features.unflatten(0, (batch, shots))
        grid_masks = mask_to_grid(support_masks, features.shape[-2:])  # B×K×h×w
        prototype = masked_average(features, grid_masks)
        masked = features * grid_masks.unsqueeze(2) if self.correlation is not None else None
        return SupportFeatures(prototype=prototype, masked_features=masked)

    def segment(self, query_images: torch.Tensor, support: SupportFeatures) -> FSDINOOutput:
        """Segment query images given an encoded support set.

        Args:
            query_images: B×3×H×W in [0, 1].
            support: from :meth:`encode_support`, with batch B (or 1, broadcast to B).
        """
        batch = query_images.shape[0]
        if support.prototype.shape[0] != batch:
            support = support.expand(batch)
        features = self.encoder(query_images)
        image_embeddings = self.adapter(features.layer3)  # B×256×h×w
        pcs = prototype_cosine_similarity(features.last, support.prototype)  # B×1×h×w
        grid = image_embeddings.shape[-2:]
        prior = None
        if self.correlation is not None:
            shots = support.masked_features.shape[1]
            per_shot = self.correlation(  # all K shots in one batch of B·K (row b·K + k = query b, shot k)
                features.last.repeat_interleave(shots, dim=0),
                support.masked_features.flatten(0, 1),
                pcs.repeat_interleave(shots, dim=0),
            )  # (B·K)×1×4h×4w
            prior = per_shot.unflatten(0, (batch, shots)).mean(1)  # B×1×4h×4w, K-shot: mean of per-shot logits
            dense_source = prior
        else:
            dense_source = F.interpolate(pcs, scale_factor=4.0, mode="bilinear", align_corners=False)
        dense = self.mask_downscaling(dense_source)  # B×256×h×w
        if dense.shape[-2:] != grid:
            raise RuntimeError(f"dense prompt {tuple(dense.shape[-2:])} does not match the grid {tuple(grid)}")
        if self.semantic_prompt is not None:
            sparse = self.semantic_prompt(support.prototype)  # B×1×256
        else:
            sparse = self.sparse_token.expand(batch, -1, -1)
        low_res = self.decoder(image_embeddings, sparse, dense)  # B×1×4h×4w
        size = query_images.shape[-2:]
        mask_logits = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
        prior_logits = None if prior is None else F.interpolate(prior, size=size, mode="bilinear", align_corners=False)
        return FSDINOOutput(mask_logits=mask_logits, prior_logits=prior_logits)

    def forward(
        self, query_images: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor
    ) -> FSDINOOutput:
        """query_images: B×3×H×W, support_images: B×K×3×H×W, support_masks: B×K×H×W → :class:`FSDINOOutput`."""
        return self.segment(query_images, self.encode_support(support_images, support_masks))
