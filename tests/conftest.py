"""Shared fixtures: tiny FS-DINO models (random weights, small images) and generated image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsdino.config import EncoderConfig, ModelConfig
from fsdino.models.build import build_fsdino

TINY_SIZE = 70  # a 5×5 grid: odd, so the 4D module's ceil(h/2) path is exercised


def tiny_config(variant: str = "full", image_size: int = TINY_SIZE) -> ModelConfig:
    return ModelConfig(
        variant=variant,
        encoder=EncoderConfig(name="vit_small_patch14_dinov2", weights="random"),
        image_size=image_size,
        sam_checkpoint=None,
    )


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {variant: build_fsdino(tiny_config(variant)).eval() for variant in ("ba_pcs", "ba_svp_pcs", "full")}


def write_scene(folder: Path, name: str, size: tuple[int, int] = (90, 120), box=(20, 30, 60, 80)) -> tuple[Path, Path]:
    """A noisy RGB image of W×H ``size`` with a bright rectangle, and its {0, 255} mask."""
    width, height = size
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    image = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    top, left, bottom, right = box
    image[top:bottom, left:right] = (220, 180, 40)
    mask[top:bottom, left:right] = 255
    image_path, mask_path = folder / f"{name}.jpg", folder / f"{name}.png"
    Image.fromarray(image).save(image_path, quality=95)
    Image.fromarray(mask, mode="L").save(mask_path)
    return image_path, mask_path
