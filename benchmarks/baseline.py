"""The dual-model pipeline FS-DINO is compared with: DINOv2 for prompts, SAM for masks (paper Fig. 1a).

Per episode: DINOv2 (timm) encodes the K supports and the query; the query position most similar to the
support prototype becomes one positive point prompt; SAM's image encoder (``segment_anything``'s
``ImageEncoderViT``, at its own input size) encodes the query; SAM's prompt encoder embeds the point and
SAM's mask decoder predicts the mask. Training-free methods (PerSAM, Matcher) add mask refinement and
more prompts on top; the encoders, which dominate the cost, are the same.

SAM's decoder is driven through :class:`fsdino.models.decoder.PromptedMaskDecoder`, which calls the
parts of ``segment_anything``'s ``MaskDecoder`` correctly for a batch of images with their own prompts
(``MaskDecoder.predict_masks`` is not). Its positional encoding has the same cost as SAM's. Weights are
random: only the cost is measured.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import PromptEncoder
from torch import nn
from torch.nn import functional as F

from fsdino.config import EncoderConfig, EncoderName
from fsdino.models.build import build_encoder
from fsdino.models.decoder import PROMPT_DIM, PromptedMaskDecoder
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.fsdino import FSDINOOutput
from fsdino.models.layers import mask_to_grid
from fsdino.models.prompts import masked_average, prototype_cosine_similarity
from fsdino.models.teacher import SAM_PATCH_SIZE, SamTeacher, build_sam_image_encoder


class DualModelBaseline(nn.Module):
    """DINOv2 + SAM few-shot segmentation with the same call signature as :class:`~fsdino.models.fsdino.FSDINO`.

    Args:
        dino: the DINOv2 encoder (prompt generation).
        sam_encoder: SAM's image encoder with its preprocessing (input size ``sam_encoder.image_size``).
        prompt_encoder: SAM's prompt encoder for the SAM input size.
        decoder: SAM's mask decoder.
    """

    def __init__(
        self,
        *,
        dino: DinoV2Encoder,
        sam_encoder: SamTeacher,
        prompt_encoder: PromptEncoder,
        decoder: PromptedMaskDecoder,
    ) -> None:
        super().__init__()
        self.dino = dino
        self.sam_encoder = sam_encoder
        self.prompt_encoder = prompt_encoder
        self.decoder = decoder
        self.requires_grad_(False)
        self.eval()

    def point_prompts(
        self, query_images: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor
    ) -> torch.Tensor:
        """B×3×H×W, B×K×3×H×W, B×K×H×W → B×1×2 point coordinates in SAM's input frame (x, y)."""
        batch, shots = support_images.shape[:2]
        support = self.dino(support_images.flatten(0, 1)).last.unflatten(0, (batch, shots))  # B×K×C×h×w
        prototype = masked_average(support, mask_to_grid(support_masks, support.shape[-2:]))  # B×C
        similarity = prototype_cosine_similarity(self.dino(query_images).last, prototype)  # B×1×h×w
        height, width = similarity.shape[-2:]
        best = similarity.flatten(1).argmax(dim=1)  # B
        cell = torch.stack([best % width + 0.5, best // width + 0.5], dim=-1).float()  # B×2 (x, y) in cells
        scale = torch.tensor([self.sam_encoder.image_size / width, self.sam_encoder.image_size / height])
        return (cell * scale.to(cell.device)).unsqueeze(1)

    @torch.no_grad()
    def forward(
        self, query_images: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor
    ) -> FSDINOOutput:
        """query_images: B×3×H×W, support_images: B×K×3×H×W, support_masks: B×K×H×W → B×1×H×W logits."""
        points = self.point_prompts(query_images, support_images, support_masks)
        labels = torch.ones(points.shape[:2], dtype=torch.int, device=points.device)  # B×1 positive
        image_embeddings = self.sam_encoder(query_images)  # B×256×g×g
        sparse, dense = self.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        low_res = self.decoder(image_embeddings, sparse.to(image_embeddings.dtype), dense.to(image_embeddings.dtype))
        mask_logits = F.interpolate(low_res.float(), size=query_images.shape[-2:], mode="bilinear", align_corners=False)
        return FSDINOOutput(mask_logits=mask_logits, prior_logits=None)


def build_dual_model_baseline(
    *, dino_name: EncoderName, image_size: int, sam_arch: str, sam_image_size: int
) -> DualModelBaseline:
    """The baseline, random weights: DINOv2 ``dino_name`` at ``image_size``, SAM ``sam_arch`` at ``sam_image_size``."""
    dino = build_encoder(EncoderConfig(name=dino_name, weights="random"), image_size)
    sam_encoder = SamTeacher(build_sam_image_encoder(sam_arch, sam_image_size), sam_image_size)
    grid = sam_image_size // SAM_PATCH_SIZE
    prompt_encoder = PromptEncoder(
        embed_dim=PROMPT_DIM,
        image_embedding_size=(grid, grid),
        input_image_size=(sam_image_size, sam_image_size),
        mask_in_chans=16,
    )
    return DualModelBaseline(
        dino=dino, sam_encoder=sam_encoder, prompt_encoder=prompt_encoder, decoder=PromptedMaskDecoder()
    )
