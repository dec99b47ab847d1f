"""Segmenting many query images from a few labelled examples.

:class:`Segmenter` loads a checkpoint once, encodes the support set once (cached), and segments query
images in batches, returning masks at each query's original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fsdino.config import ModelConfig
from fsdino.models.build import build_fsdino, load_fsdino
from fsdino.models.fsdino import FSDINO, SupportFeatures


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """H×W×3 uint8 → 3×size×size float32 in [0, 1] (bilinear, antialiased)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return F.interpolate(tensor[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def mask_to_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """H×W {0, 1, 255} → size×size float32 foreground in {0, 1} (nearest; ignore counts as background)."""
    foreground = torch.from_numpy((mask == 1).astype(np.float32))
    return F.interpolate(foreground[None, None], size=(size, size), mode="nearest")[0, 0]


class Segmenter:
    """Few-shot segmentation of many images against one cached support set.

    Args:
        model: an FS-DINO network.
        image_size: the square input size the model was built for.
        device: where to run.
        batch_size: queries per forward pass.
    """

    def __init__(self, model: FSDINO, image_size: int, *, device: str = "cpu", batch_size: int = 4) -> None:
        self.model = model.to(device).eval()
        self.image_size = image_size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._support: SupportFeatures | None = None

    @classmethod
    def from_checkpoint(cls, path: Path | str, *, device: str = "cpu", batch_size: int = 4) -> Segmenter:
        model, config, _ = load_fsdino(path)
        return cls(model, config.image_size, device=device, batch_size=batch_size)

    @classmethod
    def untrained(cls, config: ModelConfig, *, device: str = "cpu", batch_size: int = 4) -> Segmenter:
        """A segmenter with randomly initialised trainable parts (for smoke tests and shape checks)."""
        return cls(build_fsdino(config), config.image_size, device=device, batch_size=batch_size)

    @torch.no_grad()
    def set_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
        """Encode and cache K support examples (H×W×3 uint8 images, H×W {0,1,255} masks)."""
        if not images or len(images) != len(masks):
            raise ValueError(f"need K ≥ 1 images and as many masks, got {len(images)} and {len(masks)}")
        size = self.image_size
        support_images = torch.stack([image_to_tensor(image, size) for image in images])[None]
        support_masks = torch.stack([mask_to_tensor(mask, size) for mask in masks])[None]
        self._support = self.model.encode_support(support_images.to(self.device), support_masks.to(self.device))

    @torch.no_grad()
    def predict(self, queries: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Foreground probabilities (H×W float32) for each query at its original size."""
        if self._support is None:
            raise RuntimeError("call set_support() before predict()")
        results: list[np.ndarray] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start : start + self.batch_size]
            batch = torch.stack([image_to_tensor(image, self.image_size) for image in chunk]).to(self.device)
            logits = self.model.segment(batch, self._support).mask_logits  # B×1×S×S
            for image, item in zip(chunk, logits, strict=True):
                full = F.interpolate(item[None].float(), size=image.shape[:2], mode="bilinear", align_corners=False)
                results.append(torch.sigmoid(full)[0, 0].cpu().numpy())
        return results

    def segment(self, queries: Sequence[np.ndarray], threshold: float = 0.5) -> list[np.ndarray]:
        """Binary masks (H×W bool) for each query at its original size."""
        return [probability > threshold for probability in self.predict(queries)]
