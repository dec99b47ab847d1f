"""DAVIS-17 (semi-supervised, 480p): video frames whose objects are segmented from the first frame.

Layout: ``<root>/JPEGImages/480p/<sequence>/<frame>.jpg``, ``<root>/Annotations/480p/<sequence>/<frame>.png``
(palette PNG, one index per object, 0 background, 255 void) and ``<root>/ImageSets/2017/val.txt`` (one
sequence a line). Image ids are ``<sequence>/<frame>``; class ids are the object indices of a
sequence (1, 2, …), local to it.

One-shot protocol (PROTOCOL-NOTES): the objects of a sequence are those in its first frame's
annotation; for every other frame and every object, the first frame and its mask of that object are
the support. The last frame is kept as a query; the metric drops first and last frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsdino.data.base import IGNORE, SegmentationSource, binary_mask
from fsdino.data.episodes import Episode
from fsdino.data.imageio import read_label_png, read_rgb
from fsdino.data.splits import Pair
from fsdino.errors import InputError


class Davis17(SegmentationSource):
    """The frames of one DAVIS-17 image set as a :class:`SegmentationSource`.

    Args:
        root: the DAVIS folder (holding ``JPEGImages``, ``Annotations`` and ``ImageSets``).
        split: image set name (``ImageSets/2017/<split>.txt``).
        resolution: ``"480p"`` (the benchmark's) or ``"Full-Resolution"``.
    """

    def __init__(self, root: Path | str, split: str = "val", resolution: str = "480p") -> None:
        self.root = Path(root)
        self.image_dir = self.root / "JPEGImages" / resolution
        self.annotation_dir = self.root / "Annotations" / resolution
        for folder in (self.image_dir, self.annotation_dir):
            if not folder.is_dir():
                raise InputError(f"{folder}: folder not found (expected the DAVIS-2017 layout)")
        list_path = self.root / "ImageSets" / "2017" / f"{split}.txt"
        if not list_path.is_file():
            raise InputError(f"{list_path}: sequence list not found")
        self.sequences = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        self._items: list[tuple[str, str]] = []
        self._first: dict[str, int] = {}
        for sequence in self.sequences:
            frames = sorted(path.stem for path in (self.image_dir / sequence).glob("*.jpg"))
            if not frames:
                raise InputError(f"{self.image_dir / sequence}: no frames found (expected <frame>.jpg)")
            self._first[sequence] = len(self._items)
            self._items.extend((sequence, frame) for frame in frames)
        self._objects: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def image_id(self, index: int) -> str:
        return "/".join(self._items[index])

    def sequence(self, index: int) -> str:
        return self._items[index][0]

    def first_frame(self, sequence: str) -> int:
        """Index of the first frame of ``sequence``."""
        return self._first[sequence]

    def image_path(self, index: int) -> Path:
        sequence, frame = self._items[index]
        return self.image_dir / sequence / f"{frame}.jpg"

    def annotation_path(self, index: int) -> Path:
        sequence, frame = self._items[index]
        return self.annotation_dir / sequence / f"{frame}.png"

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_path(index))

    def load_labels(self, index: int) -> np.ndarray:
        """H×W uint8 object indices (0 background, 255 void)."""
        return read_label_png(self.annotation_path(index))

    def load_mask(self, index: int, class_id: int) -> np.ndarray:
        labels = self.load_labels(index)
        return binary_mask(labels, class_id, ignore=labels == IGNORE)

    def objects(self, sequence: str) -> tuple[int, ...]:
        """Object indices of ``sequence``: those in its first frame's annotation."""
        if sequence not in self._objects:
            values = np.unique(self.load_labels(self._first[sequence]))
            self._objects[sequence] = tuple(int(v) for v in values if v not in (0, IGNORE))
        return self._objects[sequence]

    def classes_in(self, index: int) -> tuple[int, ...]:
        """The sequence's objects (an object hidden in this frame is still asked for: empty mask)."""
        return self.objects(self.sequence(index))


def query_pairs(source: Davis17) -> list[Pair]:
    """(frame, object) for every frame but the first of each sequence, in list, frame, object order."""
    return [
        (source.image_id(index), object_id)
        for index in range(len(source))
        if index != source.first_frame(source.sequence(index))
        for object_id in source.classes_in(index)
    ]


def first_frame_episodes(source: Davis17, pairs: list[Pair]) -> list[Episode]:
    """One episode per (frame, object): the support is the sequence's first frame."""
    episodes = []
    for image_id, object_id in pairs:
        sequence = image_id.split("/")[0]
        support = source.image_id(source.first_frame(sequence))
        episodes.append(Episode(image_id, object_id, (support,)))
    return episodes
