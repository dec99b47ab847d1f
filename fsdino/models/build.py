"""Builders: the single entry point from a :class:`~fsdino.config.ModelConfig` to a ready network.

Weights are loaded here (through :mod:`fsdino.checkpoints`), never inside a module.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import timm
from timm.data import resolve_model_data_config

from fsdino.checkpoints import (
    check_state_matches,
    load_dinov2_backbone,
    load_sam_decoder,
    read_checkpoint,
    segmenter_state,
)
from fsdino.config import EncoderConfig, ModelConfig
from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.correlation import Correlation4D
from fsdino.models.decoder import PromptedMaskDecoder
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.fsdino import FSDINO
from fsdino.models.seeding import seeded
from fsdino.models.teacher_builder import build_teacher

__all__ = ["build_encoder", "build_fsdino", "build_teacher", "load_fsdino", "seeded"]

#: Seed used to initialise ``weights: random`` encoders, so that every process builds the same one.
RANDOM_ENCODER_SEED = 0


def build_encoder(config: EncoderConfig, image_size: int = 518, blocks: int | None = None) -> DinoV2Encoder:
    """Build the frozen DINOv2 encoder.

    Args:
        config: which DINOv2 and which weights (``hub``, ``random`` or a ``.pth`` path).
        image_size: size the position embedding is resampled to (any multiple of 14 still works).
        blocks: ``3`` to build an encoder that computes only the first three blocks (distillation).
    """
    kwargs = {"pretrained": config.weights == "hub", "num_classes": 0, "dynamic_img_size": True, "img_size": image_size}
    with seeded(RANDOM_ENCODER_SEED):
        vit = timm.create_model(config.name, **kwargs)
    if config.weights not in ("hub", "random"):
        load_dinov2_backbone(vit, config.weights, config.sha256)
    if blocks is not None:
        # Truncate after loading, so the kept blocks are exactly those of the full encoder (also for
        # seeded random weights) and the dropped ones can never be computed.
        vit.blocks = vit.blocks[:blocks]
    data_config = resolve_model_data_config(vit)
    return DinoV2Encoder(vit, mean=tuple(data_config["mean"]), std=tuple(data_config["std"]), blocks=blocks)


def build_fsdino(config: ModelConfig, *, load_sam: bool = True, seed: int | None = None) -> FSDINO:
    """Build FS-DINO from its config; the decoder side is initialised from SAM when a checkpoint is set.

    ``seed`` fixes the random initialisation of the trainable modules (the pipeline passes the training
    seed, so that a run is reproducible); ``None`` draws it from the global RNG.
    """
    encoder = build_encoder(config.encoder, config.image_size)
    with seeded(seed) if seed is not None else contextlib.nullcontext():
        correlation = None
        if config.variant == "full":
            widths = config.correlation
            correlation = Correlation4D(
                grid_size=config.grid_size, hidden_dim=widths.hidden_dim, up_dims=widths.up_dims
            )
        model = FSDINO(
            encoder=encoder,
            adapter=BottleneckAdapter(in_dim=encoder.embed_dim),
            decoder=PromptedMaskDecoder(),
            variant=config.variant,
            correlation=correlation,
        )
    if load_sam and config.sam_checkpoint is not None:
        load_sam_decoder(model, config.sam_checkpoint, config.sam_checkpoint_sha256)
    return model


def load_fsdino(path: Path | str, *, sha256: str | None = None) -> tuple[FSDINO, ModelConfig, dict]:
    """Rebuild an FS-DINO network from a checkpoint written by :func:`fsdino.checkpoints.save_checkpoint`.

    Returns the model (in eval mode, on the CPU), its config and the checkpoint's metadata.
    """
    config, state, metadata = read_checkpoint(path, sha256)
    model = build_fsdino(config, load_sam=False)
    check_state_matches(segmenter_state(model), state, path)
    model.load_state_dict(state, strict=False)  # only the encoder's keys are absent, by construction
    return model.eval(), config, metadata
