"""Reading and writing images and masks, with one-line errors for bad input.

Masks: single-channel (L, P, 1) PNGs whose values are a subset of {0, 1, 255}. If the value 1 occurs,
1 is foreground and 255 is ignore (VOC convention); otherwise 255 is foreground ({0, 255} binary masks).
Palette PNGs are read by index, never through their colours.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsdino.errors import InputError
from fsdino.io.atomic import write_bytes_atomic

ALLOWED_MASK_VALUES = frozenset({0, 1, 255})
IGNORE_VALUE = 255


def read_image(path: Path | str) -> np.ndarray:
    """Read an RGB image: H×W×3 uint8 (grey and RGBA images are converted)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable image ({type(error).__name__})") from error


def _mask_values(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: mask not found")
    try:
        with Image.open(path) as image:
            mode = image.mode
            pixels = np.asarray(image.convert("RGB") if mode in ("RGB", "RGBA") else image, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable mask ({type(error).__name__})") from error
    if mode == "1":
        return pixels * 255
    if mode in ("L", "P"):
        return pixels
    if mode in ("RGB", "RGBA") and (pixels == pixels[..., :1]).all():
        return pixels[..., 0].copy()  # a grey mask saved as RGB
    raise InputError(f"{path}: expected a single-channel mask (L, P or 1), got mode {mode}")


def read_mask(path: Path | str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask as H×W uint8 with 0 = background, 1 = foreground, 255 = ignore.

    Args:
        path: mask file.
        expected_size: (H, W) of the image the mask belongs to; a different size is an error.
    """
    path = Path(path)
    values = _mask_values(path)
    present = set(np.unique(values).tolist())
    extra = sorted(present - ALLOWED_MASK_VALUES)
    if extra:
        shown = ", ".join(str(v) for v in extra[:5])
        raise InputError(f"{path}: mask values must be {{0,1,255}} or {{0,255}}, found {shown}")
    if expected_size is not None and values.shape != tuple(expected_size):
        height, width = expected_size
        raise InputError(f"{path}: mask is {values.shape[1]}×{values.shape[0]} but its image is {width}×{height} (W×H)")
    if 1 in present:
        return values  # {0, 1, 255}: VOC-style, 255 = ignore
    return (values == 255).astype(np.uint8)  # {0, 255}: 255 = foreground


def read_support_mask(path: Path | str, expected_size: tuple[int, int]) -> np.ndarray:
    """A support mask must have at least one foreground pixel."""
    mask = read_mask(path, expected_size)
    if not (mask == 1).any():
        raise InputError(f"{path}: support mask is empty (no foreground pixel)")
    return mask


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """A binary H×W mask encoded as an 8-bit PNG with values {0, 255}."""
    return _png_bytes(Image.fromarray(np.where(mask.astype(bool), 255, 0).astype(np.uint8), mode="L"))


def rgb_png(image: np.ndarray) -> bytes:
    """An H×W×3 uint8 image encoded as PNG."""
    return _png_bytes(Image.fromarray(image.astype(np.uint8), mode="RGB"))


def write_mask(path: Path | str, mask: np.ndarray) -> None:
    """Write a binary H×W mask as an 8-bit PNG with values {0, 255}, atomically."""
    write_bytes_atomic(path, mask_png(mask))
