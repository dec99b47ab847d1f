"""Parameter counts and feature shapes of an FS-DINO network, to check it against the paper's numbers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fsdino.models.fsdino import FSDINO
from fsdino.models.prompts import prototype_cosine_similarity


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(model: FSDINO) -> dict[str, int]:
    """Parameters per module; ``*_trainable`` counts exclude frozen weights (encoder, unused SAM heads)."""
    sparse_token = 0 if model.sparse_token is None else model.sparse_token.numel()
    return {
        "encoder": count_parameters(model.encoder),
        "adapter": count_parameters(model.adapter),
        "semantic_visual_prompt": count_parameters(model.semantic_prompt),
        "sparse_token": sparse_token,
        "correlation_4d": count_parameters(model.correlation),
        "mask_downscaling": count_parameters(model.mask_downscaling),
        "decoder": count_parameters(model.decoder),
        "decoder_trainable": count_parameters(model.decoder, trainable_only=True),
        "total_trainable": count_parameters(model, trainable_only=True),
        "total": count_parameters(model),
    }


@torch.no_grad()
def feature_shapes(model: FSDINO, image_size: int, shots: int = 1) -> dict[str, list[int]]:
    """Shapes of the intermediate tensors for one episode of ``shots`` supports (batch 1)."""
    query = torch.zeros(1, 3, image_size, image_size)
    supports = torch.zeros(1, shots, 3, image_size, image_size)
    masks = torch.zeros(1, shots, image_size, image_size)
    masks[..., image_size // 4 : image_size // 2, image_size // 4 : image_size // 2] = 1
    features = model.encoder(query)
    support = model.encode_support(supports, masks)
    output = model.segment(query, support)
    shapes: dict[str, Any] = {
        "query": query.shape,
        "encoder_layer3": features.layer3.shape,
        "encoder_last": features.last.shape,
        "image_embedding": model.adapter(features.layer3).shape,
        "prototype": support.prototype.shape,
        "pcs": prototype_cosine_similarity(features.last, support.prototype).shape,
        "mask_logits": output.mask_logits.shape,
    }
    if output.prior_logits is not None:
        shapes["prior_logits"] = output.prior_logits.shape
    return {name: list(shape) for name, shape in shapes.items()}
