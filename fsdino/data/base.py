"""The dataset interface: a source of images with one binary mask per class.

A source knows nothing of folds or episodes: it maps an index to an image, the classes present in it,
and a per-class mask read from the dataset's own on-disk format. Splits (``fsdino.data.splits``) and
episodes (``fsdino.data.episodes``) refer to images by :meth:`SegmentationSource.image_id`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from fsdino.errors import InputError

#: Mask values: background, foreground of the asked class, and "ignore" (VOC boundaries, DAVIS void).
BACKGROUND, FOREGROUND, IGNORE = 0, 1, 255


class SegmentationSource(ABC):
    """Images with per-class binary masks.

    Subclasses implement the abstract methods; ids are strings that are unique within the source and
    stable across machines (file stems or relative paths), so split files can name them.
    """

    _index_by_id: dict[str, int] | None = None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def image_id(self, index: int) -> str:
        """Stable id of image ``index`` (e.g. ``"2007_000033"``, ``"abacus/3"``, ``"bear/00004"``)."""

    @abstractmethod
    def image_path(self, index: int) -> Path:
        """Path of the image file (for error messages and checks)."""

    @abstractmethod
    def load_image(self, index: int) -> np.ndarray:
        """H×W×3 uint8 RGB."""

    @abstractmethod
    def load_mask(self, index: int, class_id: int) -> np.ndarray:
        """H×W uint8 with 0 background, 1 pixels of ``class_id`` and 255 ignore."""

    @abstractmethod
    def classes_in(self, index: int) -> tuple[int, ...]:
        """Sorted ids of the classes present in image ``index`` (never 0 or 255)."""

    def class_pixels(self, index: int) -> dict[int, int]:
        """class id → its pixels in image ``index`` (every class of :meth:`classes_in`; ignore not counted).

        Reads each class's mask; sources with a label map override it to read the file once.
        """
        classes = self.classes_in(index)
        return {class_id: int((self.load_mask(index, class_id) == FOREGROUND).sum()) for class_id in classes}

    def index_of(self, image_id: str) -> int:
        """Inverse of :meth:`image_id`; an unknown id is an :class:`InputError`."""
        if self._index_by_id is None:
            self._index_by_id = {self.image_id(index): index for index in range(len(self))}
        try:
            return self._index_by_id[image_id]
        except KeyError:
            raise InputError(f"{type(self).__name__}: unknown image id {image_id!r}") from None

    _decoded: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None
    _decoded_limit: int = 0

    def keep_decoded(self, max_pairs: int) -> None:
        """Keep up to ``max_pairs`` decoded (image, mask) pairs in memory, read-only, for repeated reads
        (training draws the same few hundred pairs every epoch; decoding was a third of a demo step)."""
        self._decoded, self._decoded_limit = ({}, max_pairs) if max_pairs > 0 else (None, 0)

    def load_pair(self, index: int, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(H×W×3 uint8 image, H×W uint8 mask), checked to have the same height and width."""
        key = (index, class_id)
        if self._decoded is not None and key in self._decoded:
            return self._decoded[key]
        image = self.load_image(index)
        mask = self.load_mask(index, class_id)
        if image.shape[:2] != mask.shape:
            raise InputError(
                f"{self.image_path(index)}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
                f"{mask.shape[1]}x{mask.shape[0]} (expected equal sizes)"
            )
        if self._decoded is not None and len(self._decoded) < self._decoded_limit:
            image, mask = np.array(image), np.array(mask)  # own copies, then frozen
            image.setflags(write=False)
            mask.setflags(write=False)
            self._decoded[key] = (image, mask)
        return image, mask


def binary_mask(labels: np.ndarray, class_id: int, ignore: np.ndarray | None = None) -> np.ndarray:
    """H×W label ids → H×W uint8 mask of ``class_id`` (1) vs the rest (0), 255 where ``ignore``."""
    mask = (labels == class_id).astype(np.uint8)
    if ignore is not None:
        mask[ignore] = IGNORE
    return mask
