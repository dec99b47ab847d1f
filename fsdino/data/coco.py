"""COCO-20i: the 80 COCO classes in 4 interleaved folds, masks built from the official instances JSON.

Layout: ``<root>/annotations/instances_{train,val}2014.json`` and images in ``<root>/train2014/`` and
``<root>/val2014/``. Class ids are COCO category ids (1-90 with gaps); a class's "index" is its
0-based position among the sorted category ids.

Folds (PROTOCOL-NOTES, HSNet): fold f tests the classes whose index c satisfies c % 4 == f (indices f,
f+4, …, f+76) on val2014 and trains on the other 60 on train2014.

Masks: the union of every instance of the class in the image, rendered with pycocotools from polygons,
uncompressed RLE or compressed RLE. Crowd annotations (``iscrowd=1``) count as the class's pixels, as in
HSNet's pre-made masks; ``include_crowd=False`` drops them (an image whose only instance of a class is a
crowd then does not hold that class). COCO has no ignore label: masks hold 0 and 1 only.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from fsdino.data.base import SegmentationSource
from fsdino.data.imageio import image_size, read_rgb
from fsdino.data.splits import Pair, sort_pairs
from fsdino.errors import InputError

NUM_FOLDS = 4
NUM_CLASSES = 80
SPLITS = ("train2014", "val2014")


def fold_category_ids(category_ids: Sequence[int], fold: int) -> tuple[int, ...]:
    """The 20 novel category ids of ``fold``: sorted positions fold, fold+4, …, fold+76."""
    if fold not in range(NUM_FOLDS):
        raise InputError(f"fold: expected 0-{NUM_FOLDS - 1}, got {fold}")
    ordered = sorted(category_ids)
    return tuple(category_id for position, category_id in enumerate(ordered) if position % NUM_FOLDS == fold)


def base_category_ids(category_ids: Sequence[int], fold: int) -> tuple[int, ...]:
    """The 60 training category ids of ``fold`` (sorted)."""
    novel = set(fold_category_ids(category_ids, fold))
    return tuple(category_id for category_id in sorted(category_ids) if category_id not in novel)


@dataclass(frozen=True)
class Instance:
    annotation_id: int
    category_id: int
    iscrowd: bool
    segmentation: Any  # polygons (list of lists), or an RLE dict with ``size`` and ``counts``


@dataclass
class CocoImage:
    file_name: str
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)


def _check_segmentation(segmentation: Any, image: CocoImage, annotation_id: int, path: Path) -> None:
    if isinstance(segmentation, list) and all(isinstance(polygon, list) for polygon in segmentation):
        return
    if isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        if list(segmentation["size"]) != [image.height, image.width]:
            raise InputError(
                f"{path}: annotation {annotation_id}: RLE size {segmentation['size']} differs from its image "
                f"({image.height}x{image.width}, expected [height, width])"
            )
        return
    raise InputError(f"{path}: annotation {annotation_id}: expected polygons or an RLE dict as segmentation")


def load_instances(path: Path | str) -> tuple[dict[int, str], dict[int, CocoImage]]:
    """Parse ``instances_*.json`` into (category id → name, COCO image id → image with its instances)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text())
        categories = {int(category["id"]): str(category["name"]) for category in data["categories"]}
        images = {
            int(image["id"]): CocoImage(str(image["file_name"]), int(image["height"]), int(image["width"]))
            for image in data["images"]
        }
        annotations = data["annotations"]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: expected COCO instances with images, annotations, categories ({error!r})") from error
    for annotation in annotations:
        annotation_id = annotation.get("id")
        category_id, image_id = annotation.get("category_id"), annotation.get("image_id")
        if category_id not in categories:
            raise InputError(f"{path}: annotation {annotation_id}: category_id {category_id} not in categories")
        if image_id not in images:
            raise InputError(f"{path}: annotation {annotation_id}: image_id {image_id} not in images")
        image = images[image_id]
        _check_segmentation(annotation.get("segmentation"), image, annotation_id, path)
        instance = Instance(annotation_id, category_id, bool(annotation.get("iscrowd", 0)), annotation["segmentation"])
        image.instances.append(instance)
    return dict(sorted(categories.items())), images


def instance_rle(instance: Instance, height: int, width: int) -> dict | None:
    """One annotation as a compressed RLE (``None``: polygons with fewer than 3 points, an empty mask)."""
    segmentation = instance.segmentation
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)) if polygons else None
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"]}


def render_instance(instance: Instance, height: int, width: int) -> np.ndarray:
    """H×W uint8 {0, 1} mask of one annotation."""
    rle = instance_rle(instance, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=np.uint8)
    with warnings.catch_warnings():
        # pycocotools 2.0.x under numpy 2 warns about ``__array__(copy=...)`` on every decode; harmless.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


class CocoInstances(SegmentationSource):
    """One COCO split (``train2014`` or ``val2014``) as a :class:`SegmentationSource`; class ids are COCO
    category ids.

    Args:
        root: folder with ``annotations/`` and the image folders.
        split: ``"train2014"`` or ``"val2014"``.
        include_crowd: count crowd regions as the class's pixels (default, as HSNet).
    """

    def __init__(self, root: Path | str, split: str, include_crowd: bool = True) -> None:
        if split not in SPLITS:
            raise InputError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(root)
        self.image_dir = self.root / split
        if not self.image_dir.is_dir():
            raise InputError(f"{self.image_dir}: image folder not found (expected the COCO 2014 layout)")
        self.annotation_path = self.root / "annotations" / f"instances_{split}.json"
        self.categories, images = load_instances(self.annotation_path)
        self.include_crowd = include_crowd
        self._images = sorted(images.values(), key=lambda image: image.file_name)
        self._pixels: dict[int, dict[int, int]] = {}

    def __len__(self) -> int:
        return len(self._images)

    def image_id(self, index: int) -> str:
        return Path(self._images[index].file_name).stem

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._images[index].file_name

    def _instances(self, index: int) -> list[Instance]:
        return [item for item in self._images[index].instances if self.include_crowd or not item.iscrowd]

    def _check_size(self, index: int, height: int, width: int) -> None:
        expected = (self._images[index].height, self._images[index].width)
        if (height, width) != expected:
            raise InputError(
                f"{self.image_path(index)}: image is {width}x{height} but {self.annotation_path.name} says "
                f"{expected[1]}x{expected[0]} (expected the JSON's width x height)"
            )

    def check_image(self, index: int) -> None:
        """Raise :class:`InputError` unless the image file exists, has a readable header and the JSON's size.

        Reads the header only (no decoding): a file cut short after its header is found at load time.
        """
        self._check_size(index, *image_size(self.image_path(index)))

    def load_image(self, index: int) -> np.ndarray:
        image = read_rgb(self.image_path(index))
        self._check_size(index, *image.shape[:2])
        return image

    def load_mask(self, index: int, class_id: int) -> np.ndarray:
        image = self._images[index]
        mask = np.zeros((image.height, image.width), dtype=np.uint8)
        for instance in self._instances(index):
            if instance.category_id == class_id:
                mask |= render_instance(instance, image.height, image.width)
        return mask

    def classes_in(self, index: int) -> tuple[int, ...]:
        return tuple(sorted({instance.category_id for instance in self._instances(index)}))

    def class_pixels(self, index: int) -> dict[int, int]:
        """class id → pixels of the union of its instances (what :meth:`load_mask` draws), from the RLEs
        without decoding them (kept: every fold's training list asks again)."""
        if index not in self._pixels:
            image = self._images[index]
            rles: dict[int, list[dict]] = {}
            for instance in self._instances(index):
                rle = instance_rle(instance, image.height, image.width)
                rles.setdefault(instance.category_id, []).extend([] if rle is None else [rle])
            self._pixels[index] = {
                class_id: int(mask_utils.area(mask_utils.merge(parts))) if parts else 0
                for class_id, parts in sorted(rles.items())
            }
        return self._pixels[index]


def fold_pairs(source: CocoInstances, category_ids: Sequence[int], fold: int, novel: bool) -> list[Pair]:
    """Sorted (image, category id) pairs of ``source`` over the fold's novel (or base) classes."""
    wanted = set(fold_category_ids(category_ids, fold) if novel else base_category_ids(category_ids, fold))
    return sort_pairs(
        (source.image_id(index), class_id)
        for index in range(len(source))
        for class_id in source.classes_in(index)
        if class_id in wanted
    )
