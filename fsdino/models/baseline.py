"""The parameter-free baseline: thresholded prototype cosine similarity (PCS, eq. 2) of the same frozen
encoder. The trained model must beat it on the novel classes (issue "evidence of learning")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.fsdino import FSDINOOutput
from fsdino.models.layers import mask_to_grid
from fsdino.models.prompts import masked_average, prototype_cosine_similarity

#: Logit scale: a similarity 0.1 above the threshold becomes probability ≈ 0.99.
LOGIT_SCALE = 50.0


class PrototypeBaseline(nn.Module):
    """Foreground where cos(prototype, query feature) > ``threshold``, upsampled bilinearly.

    Args:
        encoder: the frozen DINOv2 encoder (the same as the trained model's).
        threshold: cosine-similarity threshold, chosen on base classes (:func:`best_threshold`).
    """

    def __init__(self, encoder: DinoV2Encoder, threshold: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        self.threshold = threshold

    @torch.no_grad()
    def similarity(
        self, query_images: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor
    ) -> torch.Tensor:
        """B×3×H×W, B×K×3×H×W, B×K×H×W → B×1×H×W cosine similarity upsampled to the input size."""
        batch, shots = support_images.shape[:2]
        support = self.encoder(support_images.flatten(0, 1)).last.unflatten(0, (batch, shots))
        prototype = masked_average(support, mask_to_grid(support_masks, support.shape[-2:]))
        pcs = prototype_cosine_similarity(self.encoder(query_images).last, prototype)
        return F.interpolate(pcs, size=query_images.shape[-2:], mode="bilinear", align_corners=False)

    def forward(
        self, query_images: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor
    ) -> FSDINOOutput:
        pcs = self.similarity(query_images, support_images, support_masks)
        return FSDINOOutput(mask_logits=(pcs - self.threshold) * LOGIT_SCALE, prior_logits=None)


def best_threshold(similarities: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor) -> float:
    """The threshold with the highest pooled foreground IoU.

    Args:
        similarities: N×H×W cosine similarities.
        targets: N×H×W masks {0, 1, 255} (255 ignored).
        candidates: T thresholds to try.
    """
    valid = targets != 255
    truth = (targets == 1) & valid
    best, best_iou = float(candidates[0]), -1.0
    for threshold in candidates.tolist():
        prediction = (similarities > threshold) & valid
        union = (prediction | truth).sum().item()
        iou = (prediction & truth).sum().item() / max(union, 1)
        if iou > best_iou:
            best, best_iou = float(threshold), iou
    return best
