"""PASCAL-5i: VOC2012 images with SBD-augmented masks, 20 classes in 4 folds of 5.

Layout (HSNet's ``datapath``): ``<root>/VOC2012/JPEGImages/<name>.jpg`` and
``<root>/VOC2012/SegmentationClassAug/<name>.png`` (one byte a pixel: class id 0-20, 255 ignore), plus
``VOC2012/ImageSets/Segmentation/val.txt`` (the 1,449 test images). Train images are those listed in
``ImageSets/SegmentationAug/train_aug.txt`` when it exists, otherwise every mask not in ``val.txt``
(the usual 10,582 ``train_aug`` images).

Folds (PROTOCOL-NOTES): fold f tests classes 5f+1 … 5f+5 (1-based VOC ids) on the val images and trains
on the other 15 classes on the train images. A pair (image, class) is in a list when the class has at
least one pixel in the image, as in HSNet's lists, whose val lists pair an image with every novel class
in it and whose train lists pair it with every base class in it: an image whose only labels are novel
classes therefore never enters a train list, while one that also shows a base class does, with the
novel pixels as background. HDMNet's stricter lists (no image with a novel class, no class under 2,048
pixels) are ``fsdino.data.train_lists``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fsdino.data.base import IGNORE, SegmentationSource, binary_mask
from fsdino.data.imageio import check_label_header, read_label_png, read_rgb
from fsdino.data.splits import Pair, sort_pairs
from fsdino.errors import InputError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
NUM_CLASSES = len(VOC_CLASSES)
NUM_FOLDS = 4
CLASSES_PER_FOLD = NUM_CLASSES // NUM_FOLDS


def fold_classes(fold: int) -> tuple[int, ...]:
    """The 5 novel (test) classes of ``fold``: 1-based VOC ids 5f+1 … 5f+5."""
    if fold not in range(NUM_FOLDS):
        raise InputError(f"fold: expected 0-{NUM_FOLDS - 1}, got {fold}")
    return tuple(range(CLASSES_PER_FOLD * fold + 1, CLASSES_PER_FOLD * (fold + 1) + 1))


def base_classes(fold: int) -> tuple[int, ...]:
    """The 15 training classes of ``fold``."""
    novel = set(fold_classes(fold))
    return tuple(class_id for class_id in range(1, NUM_CLASSES + 1) if class_id not in novel)


def voc_dir(root: Path | str) -> Path:
    """``root/VOC2012`` (or ``root`` itself when it already holds ``JPEGImages``), checked."""
    root = Path(root)
    candidate = root / "VOC2012" if (root / "VOC2012").is_dir() else root
    for folder in ("JPEGImages", "SegmentationClassAug"):
        if not (candidate / folder).is_dir():
            raise InputError(f"{candidate / folder}: folder not found (expected the VOC2012 layout)")
    return candidate


def read_labels(path: Path | str) -> np.ndarray:
    """H×W uint8 VOC class ids from a ``SegmentationClassAug`` PNG, values checked to be 0-20 or 255."""
    labels = read_label_png(path)
    values = np.unique(labels)
    bad = values[(values > NUM_CLASSES) & (values != IGNORE)]
    if bad.size:
        raise InputError(f"{path}: class id {int(bad[0])} out of range (expected 0-{NUM_CLASSES} or {IGNORE})")
    return labels


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: image list not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def image_sets(root: Path | str) -> tuple[list[str], list[str]]:
    """(train ids, val ids), each sorted; see the module docstring for where they come from."""
    voc = voc_dir(root)
    val_ids = sorted(set(_read_id_list(voc / "ImageSets" / "Segmentation" / "val.txt")))
    aug_list = voc / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    if aug_list.is_file():
        train_ids = sorted(set(_read_id_list(aug_list)) - set(val_ids))
    else:
        all_ids = {path.stem for path in (voc / "SegmentationClassAug").glob("*.png")}
        train_ids = sorted(all_ids - set(val_ids))
    return train_ids, val_ids


class PascalVOC(SegmentationSource):
    """VOC2012 + SegmentationClassAug as a :class:`SegmentationSource` (class ids 1-20).

    Args:
        root: folder holding ``VOC2012/`` (or the ``VOC2012`` folder itself).
        image_ids: the images to expose, in this order; default: every mask PNG, sorted.
    """

    def __init__(self, root: Path | str, image_ids: Sequence[str] | None = None) -> None:
        self.voc = voc_dir(root)
        if image_ids is None:
            image_ids = sorted(path.stem for path in (self.voc / "SegmentationClassAug").glob("*.png"))
        self._ids = list(image_ids)
        self._pixels: dict[int, dict[int, int]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def image_id(self, index: int) -> str:
        return self._ids[index]

    def image_path(self, index: int) -> Path:
        return self.voc / "JPEGImages" / f"{self._ids[index]}.jpg"

    def mask_path(self, index: int) -> Path:
        return self.voc / "SegmentationClassAug" / f"{self._ids[index]}.png"

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_path(index))

    def load_labels(self, index: int) -> np.ndarray:
        """H×W uint8 class ids 0-20, 255 ignore."""
        return read_labels(self.mask_path(index))

    def load_mask(self, index: int, class_id: int) -> np.ndarray:
        labels = self.load_labels(index)
        return binary_mask(labels, class_id, ignore=labels == IGNORE)

    def classes_in(self, index: int) -> tuple[int, ...]:
        return tuple(self.class_pixels(index))

    def class_pixels(self, index: int) -> dict[int, int]:
        """class id → pixels, in class order, from one read of the mask (kept: the scan fills it once)."""
        if index not in self._pixels:
            counts = np.bincount(self.load_labels(index).ravel(), minlength=NUM_CLASSES + 1)
            present = [class_id for class_id in range(1, NUM_CLASSES + 1) if counts[class_id]]
            self._pixels[index] = {class_id: int(counts[class_id]) for class_id in present}
        return self._pixels[index]

    def check_sizes(self, index: int) -> None:
        """Raise :class:`InputError` unless image and mask files have the same size (headers only)."""
        check_label_header(self.mask_path(index), self.image_path(index))


def scan_classes(source: PascalVOC, check_images: bool = True) -> dict[str, tuple[int, ...]]:
    """image id → classes present, reading every mask (and every image header when ``check_images``)."""
    classes = {}
    for index in range(len(source)):
        if check_images:
            source.check_sizes(index)
        classes[source.image_id(index)] = source.classes_in(index)
    return classes


def fold_pairs(
    image_classes: dict[str, tuple[int, ...]], train_ids: Iterable[str], val_ids: Iterable[str], fold: int
) -> tuple[list[Pair], list[Pair]]:
    """(train pairs over base classes, val pairs over novel classes) of ``fold``, each sorted (HSNet's rule:
    every class with a pixel; ``fsdino.data.train_lists`` filters the train pairs further)."""
    novel, base = set(fold_classes(fold)), set(base_classes(fold))
    train: list[Pair] = []
    for image_id in train_ids:
        train.extend((image_id, class_id) for class_id in set(image_classes[image_id]) & base)
    val = [(image_id, class_id) for image_id in val_ids for class_id in set(image_classes[image_id]) & novel]
    return sort_pairs(train), sort_pairs(val)


def read_hsnet_list(path: Path | str) -> list[Pair]:
    """Read an HSNet split file (``2007_000033__01`` a line: image, then the 1-based class id)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: split list not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, class_text = line.strip().rpartition("__")
        if not name or not class_text.isdigit() or not 1 <= int(class_text) <= NUM_CLASSES:
            raise InputError(f"{path}:{number}: expected '<image>__<class 01-20>', got {line.strip()!r}")
        pairs.append((name, int(class_text)))
    return pairs


def hsnet_fold_pairs(lists_dir: Path | str, fold: int) -> tuple[list[Pair], list[Pair]]:
    """Pairs from HSNet's lists: ``trn/fold<g>.txt`` of the other folds (sorted), ``val/fold<f>.txt``.

    The val list keeps the file's order, since the test episodes walk it in order.
    """
    lists_dir = Path(lists_dir)
    fold_classes(fold)
    train = []
    for other in range(NUM_FOLDS):
        if other != fold:
            train.extend(read_hsnet_list(lists_dir / "trn" / f"fold{other}.txt"))
    return sort_pairs(train), read_hsnet_list(lists_dir / "val" / f"fold{fold}.txt")
