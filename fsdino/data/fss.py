"""FSS-1000: 1,000 classes of 10 images each, one folder a class, split 520 / 240 / 240 by class.

Layout: ``<root>/FSS-1000/<class>/<N>.jpg`` with the mask ``<N>.png`` beside it (grey or RGB; a pixel is
foreground when its luminance is ≥ 128, as in HSNet). Class ids are 1-based positions of the class
folder names in sorted order; image ids are ``<class>/<N>``.

Class split: HSNet's fixed lists of class names (``trn.txt``, ``val.txt``, ``test.txt``, one name a line)
are used when a folder holding them is given. Otherwise the split is a documented deterministic rule:
sort the class names, shuffle them with ``numpy.random.default_rng(seed)`` (seed 0), and take the first
52% (rounded) for train, the next 24% for val and the rest for test (520 / 240 / 240 for 1,000 classes).
The rule does not reproduce HSNet's lists; results on it are not comparable to published numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fsdino.data.base import SegmentationSource
from fsdino.data.imageio import read_grey, read_rgb
from fsdino.data.splits import Pair
from fsdino.errors import InputError

SPLIT_NAMES = ("train", "val", "test")
#: HSNet's list file for each of our split names.
OFFICIAL_LIST_FILES = {"train": "trn.txt", "val": "val.txt", "test": "test.txt"}
SPLIT_FRACTIONS = (0.52, 0.24)  # train, val; test takes the rest
MASK_THRESHOLD = 128


def fss_dir(root: Path | str) -> Path:
    """``root/FSS-1000`` (or ``root`` itself when it holds the class folders), checked."""
    root = Path(root)
    candidate = root / "FSS-1000" if (root / "FSS-1000").is_dir() else root
    if not candidate.is_dir():
        raise InputError(f"{candidate}: folder not found (expected FSS-1000/<class>/<N>.jpg)")
    return candidate


def read_fss_mask(path: Path | str) -> np.ndarray:
    """H×W uint8 {0, 1}: luminance ≥ 128 is foreground."""
    return (read_grey(path) >= MASK_THRESHOLD).astype(np.uint8)


class FSS1000(SegmentationSource):
    """FSS-1000 as a :class:`SegmentationSource`: every image holds exactly one class, its folder's.

    Args:
        root: folder holding ``FSS-1000/`` (or the ``FSS-1000`` folder itself).
        classes: restrict to these class names (default: every folder).
    """

    def __init__(self, root: Path | str, classes: Sequence[str] | None = None) -> None:
        self.directory = fss_dir(root)
        self.class_names = sorted(path.name for path in self.directory.iterdir() if path.is_dir())
        if not self.class_names:
            raise InputError(f"{self.directory}: no class folders found (expected FSS-1000/<class>/<N>.jpg)")
        self.class_ids = {name: position + 1 for position, name in enumerate(self.class_names)}
        chosen = self.class_names if classes is None else classes
        self._items: list[tuple[str, str]] = []
        for name in chosen:
            if name not in self.class_ids:
                raise InputError(f"{self.directory / name}: class folder not found")
            self._items.extend((name, stem) for stem in self._stems(name))

    def _stems(self, name: str) -> list[str]:
        folder = self.directory / name
        stems = [path.stem for path in folder.glob("*.jpg")]
        if not stems:
            raise InputError(f"{folder}: no <N>.jpg images found")
        for stem in stems:
            if not (folder / f"{stem}.png").is_file():
                raise InputError(f"{folder / stem}.png: mask not found (expected beside {stem}.jpg)")
        return sorted(stems, key=lambda stem: (len(stem), stem))

    def __len__(self) -> int:
        return len(self._items)

    def image_id(self, index: int) -> str:
        name, stem = self._items[index]
        return f"{name}/{stem}"

    def class_name(self, index: int) -> str:
        return self._items[index][0]

    def image_path(self, index: int) -> Path:
        name, stem = self._items[index]
        return self.directory / name / f"{stem}.jpg"

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_path(index))

    def load_mask(self, index: int, class_id: int) -> np.ndarray:
        mask = read_fss_mask(self.image_path(index).with_suffix(".png"))
        return mask if class_id == self.classes_in(index)[0] else np.zeros_like(mask)

    def classes_in(self, index: int) -> tuple[int, ...]:
        return (self.class_ids[self._items[index][0]],)


def read_class_list(path: Path | str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: class list not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_classes(
    class_names: Sequence[str], official_dir: Path | str | None = None, seed: int = 0
) -> dict[str, list[str]]:
    """split name → class names, from HSNet's lists in ``official_dir`` or by the seeded rule."""
    if official_dir is not None:
        known = set(class_names)
        splits = {}
        for split, file_name in OFFICIAL_LIST_FILES.items():
            names = read_class_list(Path(official_dir) / file_name)
            missing = [name for name in names if name not in known]
            if missing:
                raise InputError(f"{Path(official_dir) / file_name}: class {missing[0]!r} has no folder in the dataset")
            splits[split] = names
        return splits
    ordered = sorted(class_names)
    shuffled = [ordered[position] for position in np.random.default_rng(seed).permutation(len(ordered))]
    n_train = round(SPLIT_FRACTIONS[0] * len(ordered))
    n_val = round(SPLIT_FRACTIONS[1] * len(ordered))
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def split_pairs(source: FSS1000, class_names: Sequence[str]) -> list[Pair]:
    """(image, class id) pairs of every image of ``class_names``, in class then image order."""
    wanted = set(class_names)
    return [
        (source.image_id(index), source.classes_in(index)[0])
        for index in range(len(source))
        if source.class_name(index) in wanted
    ]
