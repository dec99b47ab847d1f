"""SA-1B images as the distillation reads them: a torch Dataset over the staged tars (:mod:`fsdino.data.sa1b`).

:class:`SA1BImages` reads one image by a positioned read of its bytes from its tar and returns it resized
to a square the encoder accepts (126, 252, 518 px in the paper's three stages, §4.1), with a key that names
the image for the teacher cache. Kept apart from the manifest code so that staging does not import torch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fsdino.data.sa1b import TarReader, read_manifest, read_tar_table
from fsdino.errors import InputError


def load_square_image(source: Path | bytes, image_size: int, resize: Literal["stretch", "center_crop"]) -> torch.Tensor:
    """Decode a JPEG (a path or its bytes) into a 3×S×S float32 tensor in [0, 1] (S = ``image_size``).

    ``stretch`` resizes the whole image to S×S, bicubic (the teacher sees the whole image too);
    ``center_crop`` resizes the short side to S and crops the centre. JPEG draft mode decodes large images
    at a reduced DCT scale that is still at least S, which makes 1,500 px → 126 px several times faster.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.draft("RGB", (image_size, image_size))
        image = image.convert("RGB")
        if resize == "center_crop":
            scale = image_size / min(image.size)
            width, height = max(image_size, round(image.width * scale)), max(image_size, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.BICUBIC)
            left, top = (width - image_size) // 2, (height - image_size) // 2
            image = image.crop((left, top, left + image_size, top + image_size))
        else:
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)


class SA1BImages(Dataset):
    """The staged SA-1B images for distillation, read from their tars.

    Args:
        manifest: path of ``manifest.parquet`` written by the staging step (``tars.json`` beside it says
            where the tars are).
        image_size: side S of the square output; a multiple of ``multiple_of`` (DINOv2's patch, 14).
        resize: ``"stretch"`` (default) or ``"center_crop"``, see :func:`load_square_image`.
        multiple_of: required divisor of ``image_size`` (16 for SAM's 1,024 px teacher input).

    Each item is ``{"image": 3×S×S float32 in [0, 1], "index": int, "key": "sa_<id>"}``; ``index`` is the
    manifest row and ``key`` the image's name, stable across manifests, for caching teacher embeddings.
    An unreadable image is skipped with a warning naming the tar and the image: the next readable row is
    returned instead, with its own index and key.
    """

    def __init__(
        self,
        manifest: Path | str,
        image_size: int,
        *,
        resize: Literal["stretch", "center_crop"] = "stretch",
        multiple_of: int = 14,
    ) -> None:
        if image_size <= 0 or image_size % multiple_of:
            raise InputError(f"image_size: expected a positive multiple of {multiple_of}, got {image_size}")
        if resize not in ("stretch", "center_crop"):
            raise InputError(f"resize: expected 'stretch' or 'center_crop', got {resize!r}")
        frame = read_manifest(manifest)
        self.reader = TarReader(read_tar_table(manifest))
        self.image_size = image_size
        self.resize = resize
        self.keys: list[str] = [str(key) for key in frame["key"]]
        self.tars: list[str] = [str(tar) for tar in frame["tar"]]
        self.ranges: np.ndarray = frame[["offset", "bytes"]].to_numpy(dtype=np.int64)
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.keys)

    def read_bytes(self, row: int) -> bytes:
        """The JPEG bytes of manifest row ``row``."""
        offset, length = self.ranges[row]
        return self.reader.read(self.tars[row], int(offset), int(length))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        for step in range(len(self)):
            row = (index + step) % len(self)
            try:
                image = load_square_image(self.read_bytes(row), self.image_size, self.resize)
            except (UnidentifiedImageError, ValueError, SyntaxError, OSError) as error:
                if isinstance(error, InputError):
                    raise
                if row not in self._warned:
                    self._warned.add(row)
                    where = f"{self.reader.paths.get(self.tars[row], self.tars[row])}:{self.keys[row]}.jpg"
                    warnings.warn(f"{where}: unreadable image skipped ({error})", RuntimeWarning, stacklevel=2)
                continue
            return {"image": image, "index": row, "key": self.keys[row]}
        raise InputError(f"{len(self)} manifest images: none could be read")
