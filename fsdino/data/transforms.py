"""Image/mask transforms: HDMNet's training augmentations and the evaluation resize.

Both take an H×W×3 uint8 image and an H×W uint8 mask ({0, 1, 255}) and return a 3×S×S float32 image
in [0, 1] (not normalised: the model normalises) and an S×S int64 mask. Masks are only ever resampled
by nearest neighbour and padded with 255, so no label value appears that was not in the input.

Training (paper §4.1 uses HDMNet's augmentations, i.e. PFENet's ``RandScale`` 0.9-1.1, ``RandRotate``
±10° with p=0.5, Gaussian blur with p=0.5, horizontal flip with p=0.5, then a random S×S crop after
padding): our one addition is ``fit_long_side`` (default on), which folds a resize of the long side to S
into the random scale, so that 128-px synthetic images and 500-px VOC images both fill the crop. Image
padding uses the ImageNet mean colour, which the model's normalisation maps to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from fsdino.data.base import FOREGROUND, IGNORE

#: ImageNet mean RGB in 0-255, the padding colour of images.
PAD_COLOUR = (124, 116, 104)


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """H×W×3 uint8, H×W uint8 → 3×H×W float32 in [0, 1], H×W int64."""
    image = np.require(image, dtype=np.uint8, requirements=["C", "W"])  # PIL arrays are read-only
    mask = np.require(mask, dtype=np.uint8, requirements=["C", "W"])
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0), torch.from_numpy(mask).long()


def resize_pair(image: np.ndarray, mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear image, nearest mask, to height×width."""
    resized_image = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    resized_mask = Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized_image), np.asarray(resized_mask)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))


@dataclass(frozen=True)
class EvalTransform:
    """Resize image (bilinear) and mask (nearest) to size×size; the caller keeps the original mask."""

    size: int

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(*resize_pair(image, mask, self.size, self.size))


@dataclass(frozen=True)
class TrainTransform:
    """Random scale, rotate, blur, flip, pad and crop to size×size (HDMNet's recipe, module docstring).

    Args:
        size: output side S.
        scale_range: random scale factor range.
        rotate_range: rotation range in degrees, applied with probability ``rotate_p``.
        flip_p: probability of a horizontal flip.
        blur_p: probability of a Gaussian blur (σ ≈ 1.1, OpenCV's for a 5×5 kernel).
        fit_long_side: scale relative to the factor that makes the long side S.
        keep_fraction: retry the crop (up to ``crop_tries``) while it keeps less than this fraction of
            the foreground pixels, so that a crop rarely loses the object.
    """

    size: int
    scale_range: tuple[float, float] = (0.9, 1.1)
    rotate_range: tuple[float, float] = (-10.0, 10.0)
    rotate_p: float = 0.5
    flip_p: float = 0.5
    blur_p: float = 0.5
    fit_long_side: bool = True
    keep_fraction: float = 0.85
    crop_tries: int = 30

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scale = rng.uniform(*self.scale_range)
        angle = rng.uniform(*self.rotate_range) if rng.random() < self.rotate_p else None
        blur = rng.random() < self.blur_p
        flip = rng.random() < self.flip_p
        return self._apply(image, mask, scale, angle, blur, flip, rng)

    @property
    def flip_only(self) -> bool:
        """True when a horizontal flip is the only random choice (no scale, rotation, blur or random crop)."""
        fixed_scale = self.scale_range[0] == self.scale_range[1] == 1.0
        return fixed_scale and self.fit_long_side and self.rotate_p == 0 and self.blur_p == 0

    def views(self, image: np.ndarray, mask: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every output this transform can produce for one pair: [unflipped, flipped] (``flip_only`` only).

        Used to precompute the frozen encoder's features of everything training will see.
        """
        if not self.flip_only:
            raise ValueError("TrainTransform.views needs a flip-only transform (scale 1, no rotation, no blur)")
        crop_rng = np.random.default_rng(0)  # the crop is the whole S×S padded image: nothing is drawn
        return [self._apply(image, mask, 1.0, None, False, flip, crop_rng) for flip in (False, True)]

    def _apply(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        scale: float,
        angle: float | None,
        blur: bool,
        flip: bool,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = mask.shape
        factor = scale * (self.size / max(height, width) if self.fit_long_side else 1.0)
        image, mask = resize_pair(image, mask, max(1, round(height * factor)), max(1, round(width * factor)))
        if angle is not None:
            image, mask = self._rotate(image, mask, angle)
        if blur:
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=1.1)))
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        image, mask = self._pad(image, mask)
        image, mask = self._crop(image, mask, rng)
        return to_tensors(image, mask)

    @staticmethod
    def _rotate(image: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
        rotated_image = Image.fromarray(image).rotate(angle, Image.Resampling.BILINEAR, fillcolor=PAD_COLOUR)
        rotated_mask = Image.fromarray(mask).rotate(angle, Image.Resampling.NEAREST, fillcolor=IGNORE)
        return np.asarray(rotated_image), np.asarray(rotated_mask)

    def _pad(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = mask.shape
        pad_h, pad_w = max(self.size - height, 0), max(self.size - width, 0)
        if not pad_h and not pad_w:
            return image, mask
        top, left = pad_h // 2, pad_w // 2
        padded_image = np.empty((height + pad_h, width + pad_w, 3), dtype=np.uint8)
        padded_image[:] = PAD_COLOUR
        padded_image[top : top + height, left : left + width] = image
        padded_mask = np.full((height + pad_h, width + pad_w), IGNORE, dtype=np.uint8)
        padded_mask[top : top + height, left : left + width] = mask
        return padded_image, padded_mask

    def _crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = mask.shape
        total = int((mask == FOREGROUND).sum())
        for _ in range(self.crop_tries):
            top, left = int(rng.integers(height - self.size + 1)), int(rng.integers(width - self.size + 1))
            crop = mask[top : top + self.size, left : left + self.size]
            if total == 0 or (crop == FOREGROUND).sum() >= self.keep_fraction * total:
                break
        return image[top : top + self.size, left : left + self.size], crop
