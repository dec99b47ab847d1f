"""Image/mask transforms: the training augmentations (HDMNet's, or PFENet/BAM's pad-and-crop) and the
evaluation resize.

Both take an H×W×3 uint8 image and an H×W uint8 mask ({0, 1, 255}) and return a 3×S×S float32 image
in [0, 1] (not normalised: the model normalises) and an S×S int64 mask. Masks are only ever resampled
by nearest neighbour and padded with 255, so no label value appears that was not in the input.

Training (paper §4.1: "the same data augmentations … with [23]", HDMNet, whose ``train.py`` composes
``RandScale`` → ``RandRotate`` (±10°, p 0.5, image padded with the ImageNet mean, label with 255) →
``RandomGaussianBlur`` (5×5, p 0.5) → ``RandomHorizontalFlip`` → ``Resize``), then one of two endings:

* ``resize="squash"`` (HDMNet's): resize straight to S×S, aspect ratio not kept, no padding, no crop,
  exactly as :class:`EvalTransform` (HDMNet's ``resized_val``), so training and test geometry agree.
  With a squash at the end the random scale changes no object's size in the output, only the resolution
  at which rotation and blur act (as in HDMNet).
* ``resize="pad_crop"`` (PFENet's and BAM's): pad to S×S with the mean colour / 255, then a random S×S
  crop, re-drawn up to 30 times while it keeps < 85% of the foreground. Our one addition,
  ``fit_long_side`` (default on), folds a resize of the long side to S into the random scale, so that
  128-px synthetic images and 500-px VOC images both fill the crop.

Image padding uses the ImageNet mean colour, which the model's normalisation maps to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from fsdino.data.base import FOREGROUND, IGNORE

if TYPE_CHECKING:  # torch is imported where tensors are made, so the configs that name these classes stay light
    import torch

#: ImageNet mean RGB in 0-255, the padding colour of images.
PAD_COLOUR = (124, 116, 104)
#: How a training transform ends: HDMNet's direct resize, or PFENet/BAM's pad and random crop.
TrainResize = Literal["squash", "pad_crop"]
#: OpenCV's 5-tap Gaussian for sigma ≤ 0 (``cv2.GaussianBlur(image, (5, 5), 0)``, HDMNet's blur).
BLUR_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """H×W×3 uint8, H×W uint8 → 3×H×W float32 in [0, 1], H×W int64."""
    import torch

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


def gaussian_blur_5x5(image: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 → H×W×3 uint8 blurred as ``cv2.GaussianBlur(image, (5, 5), 0)``: the binomial taps
    [1 4 6 4 1]/16 along each axis, borders reflected without repeating the edge (OpenCV's default)."""
    padded = np.pad(image.astype(np.float32), ((2, 2), (2, 2), (0, 0)), mode="reflect")
    height, width = image.shape[:2]
    rows = sum(tap * padded[offset : offset + height] for offset, tap in enumerate(BLUR_TAPS))
    blurred = sum(tap * rows[:, offset : offset + width] for offset, tap in enumerate(BLUR_TAPS))
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


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
    """Random scale, rotate, blur, flip, then a squash to size×size or a pad and random crop (module docstring).

    Args:
        size: output side S.
        resize: ``"squash"`` (HDMNet's direct resize) or ``"pad_crop"`` (PFENet/BAM's pad and random crop).
        scale_range: random scale factor range.
        rotate_range: rotation range in degrees, applied with probability ``rotate_p``.
        flip_p: probability of a horizontal flip.
        blur_p: probability of OpenCV's 5×5 Gaussian blur (:func:`gaussian_blur_5x5`).
        fit_long_side: ``pad_crop`` only: scale relative to the factor that makes the long side S.
        keep_fraction: ``pad_crop`` only: retry the crop (up to ``crop_tries``) while it keeps less than
            this fraction of the foreground pixels, so that a crop rarely loses the object.
    """

    size: int
    resize: TrainResize = "squash"
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
        whole_image = self.resize == "squash" or self.fit_long_side  # no random crop
        return fixed_scale and whole_image and self.rotate_p == 0 and self.blur_p == 0

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
        fit = self.resize == "pad_crop" and self.fit_long_side
        factor = scale * (self.size / max(height, width) if fit else 1.0)
        if factor != 1.0:
            image, mask = resize_pair(image, mask, max(1, round(height * factor)), max(1, round(width * factor)))
        if angle is not None:
            image, mask = self._rotate(image, mask, angle)
        if blur:
            image = gaussian_blur_5x5(image)
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.resize == "squash":
            return to_tensors(*resize_pair(image, mask, self.size, self.size))
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
