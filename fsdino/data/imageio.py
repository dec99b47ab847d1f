"""Reading images and label PNGs from disk, and writing output files atomically.

Every reader raises :class:`~fsdino.errors.InputError` with a one-line message that names the file;
an unreadable or truncated file raises the subclass :class:`CorruptFileError`, which training may skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsdino.errors import InputError
from fsdino.io.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["write_bytes_atomic", "write_json_atomic", "write_text_atomic"]

#: PIL modes accepted for label PNGs: one byte per pixel, grey or palette (the index is the label).
LABEL_MODES = ("L", "P")


class CorruptFileError(InputError):
    """An image or mask file that exists but cannot be decoded (truncated, not an image, …)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: cannot read the file ({reason})")
        self.path = Path(path)


def _open_decoded(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CorruptFileError(path, str(error).splitlines()[0] if str(error) else type(error).__name__) from error


def read_rgb(path: Path | str) -> np.ndarray:
    """Decode an image file as H×W×3 uint8 RGB (grey, CMYK and palette images are converted)."""
    image = _open_decoded(Path(path))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_label_png(path: Path | str, modes: tuple[str, ...] = LABEL_MODES) -> np.ndarray:
    """Decode a one-byte-per-pixel label PNG (``L`` or palette ``P``) as H×W uint8 label ids.

    A palette PNG yields its indices, not its colours. Any other mode (RGB, 16-bit, …) is an
    :class:`InputError`: a colour-coded mask would silently give wrong labels.
    """
    path = Path(path)
    image = _open_decoded(path)
    if image.mode not in modes:
        raise InputError(f"{path}: expected a single-channel or palette PNG ({'/'.join(modes)}), got mode {image.mode}")
    return np.asarray(image, dtype=np.uint8)


def read_grey(path: Path | str) -> np.ndarray:
    """Decode any image as H×W uint8 luminance (FSS-1000 masks are stored as RGB or grey)."""
    return np.asarray(_open_decoded(Path(path)).convert("L"), dtype=np.uint8)


def image_header(path: Path | str) -> tuple[int, int, str]:
    """(height, width, PIL mode) from the file header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise CorruptFileError(path, str(error) or type(error).__name__) from error
    return height, width, mode


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) from the file header."""
    return image_header(path)[:2]


def check_label_header(mask_path: Path | str, image_path: Path | str, modes: tuple[str, ...] = LABEL_MODES) -> None:
    """Raise :class:`InputError` unless the mask is a one-byte PNG of the image's size (headers only)."""
    mask_h, mask_w, mode = image_header(mask_path)
    if mode not in modes:
        raise InputError(f"{mask_path}: expected a single-channel or palette PNG ({'/'.join(modes)}), got mode {mode}")
    image_h, image_w = image_size(image_path)
    if (mask_h, mask_w) != (image_h, image_w):
        raise InputError(
            f"{mask_path}: mask is {mask_w}x{mask_h} but its image {Path(image_path).name} is {image_w}x{image_h} "
            "(expected equal sizes)"
        )
