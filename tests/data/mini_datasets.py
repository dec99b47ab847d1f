"""Writers of miniature datasets in the official on-disk formats (VOC, COCO, FSS-1000, DAVIS-17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# --- PASCAL VOC2012 + SegmentationClassAug ------------------------------------------------------------

#: image name → classes (one rectangle each), and whether it is in val.txt.
VOC_TRAIN = {
    "2007_000001": (1,),  # only a fold-0 novel class: never in fold 0's train list
    "2007_000002": (1, 6),  # fold-0 novel + base: in fold 0's train list (as 6) unless exclude_novel
    "2007_000003": (6, 7),
    "2007_000004": (15,),
    "2007_000005": (15, 20),
    "2007_000006": (11,),
}
VOC_VAL = {
    "2008_000001": (2,),
    "2008_000002": (6, 9),
    "2008_000003": (2, 10),
    "2008_000004": (16, 3),
    "2008_000005": (6,),
    "2008_000006": (9, 2),
}


def _rectangles(height: int, width: int, classes: tuple[int, ...], border: int = 1) -> np.ndarray:
    """Labels with one rectangle per class (side by side) and a ``border``-px 255 ring around each."""
    labels = np.zeros((height, width), dtype=np.uint8)
    slot = width // len(classes)
    for position, class_id in enumerate(classes):
        left, right = position * slot + 3, (position + 1) * slot - 3
        labels[4 - border : height - 4 + border, left - border : right + border] = 255
        labels[4 : height - 4, left:right] = class_id
    return labels


def write_jpeg(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def make_voc(root: Path) -> Path:
    voc = root / "VOC2012"
    for seed, (name, classes) in enumerate({**VOC_TRAIN, **VOC_VAL}.items()):
        height, width = 30 + seed % 3, 40 + 2 * (seed % 4)
        write_jpeg(voc / "JPEGImages" / f"{name}.jpg", height, width, seed)
        (voc / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rectangles(height, width, classes), mode="L").save(
            voc / "SegmentationClassAug" / f"{name}.png"
        )
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{name}\n" for name in VOC_VAL))
    return root


# --- COCO 2014 instances ------------------------------------------------------------------------------

#: COCO's 80 category ids (1-90 without 12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
COCO_HEIGHT, COCO_WIDTH = 24, 32


def coco_blob() -> np.ndarray:
    """The exact 24×32 mask stored as RLE in the mini COCO files."""
    mask = np.zeros((COCO_HEIGHT, COCO_WIDTH), dtype=np.uint8)
    mask[10:20, 12:30] = 1
    mask[12:14, 20:22] = 0
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's iscrowd format: column-major run lengths starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def coco_instances(split: str, image_ids: list[int], instances: list[dict]) -> dict:
    return {
        "images": [
            {
                "id": image_id,
                "file_name": f"COCO_{split}_{image_id:012d}.jpg",
                "height": COCO_HEIGHT,
                "width": COCO_WIDTH,
            }
            for image_id in image_ids
        ],
        "annotations": instances,
        "categories": [{"id": cid, "name": f"cat{cid}", "supercategory": "x"} for cid in COCO_CATEGORY_IDS],
    }


def make_coco(root: Path) -> Path:
    """val2014: image 1 has a polygon of category 1 and a compressed-RLE category 2 instance; image 2 a
    crowd (uncompressed RLE) of category 1; image 3 a polygon of category 1 and of category 5.
    train2014: images 10 and 11 with categories 2 and 3 (polygons)."""
    compressed = mask_utils.encode(np.asfortranarray(coco_blob()))
    compressed["counts"] = compressed["counts"].decode("ascii")
    rectangle = [[2, 2, 10, 2, 10, 8, 2, 8]]
    val_annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rectangle},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": compressed},
        {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(coco_blob())},
        {"id": 4, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": rectangle},
        {"id": 5, "image_id": 3, "category_id": 5, "iscrowd": 0, "segmentation": [[20, 4, 28, 4, 28, 12]]},
    ]
    train_annotations = [
        {"id": 11, "image_id": 10, "category_id": 2, "iscrowd": 0, "segmentation": rectangle},
        {"id": 12, "image_id": 11, "category_id": 3, "iscrowd": 0, "segmentation": rectangle},
        {"id": 13, "image_id": 11, "category_id": 1, "iscrowd": 0, "segmentation": rectangle},
    ]
    for split, image_ids, instances in (
        ("val2014", [1, 2, 3], val_annotations),
        ("train2014", [10, 11], train_annotations),
    ):
        data = coco_instances(split, image_ids, instances)
        for seed, image in enumerate(data["images"]):
            write_jpeg(root / split / image["file_name"], COCO_HEIGHT, COCO_WIDTH, seed)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


# --- FSS-1000 -------------------------------------------------------------------------------------------

FSS_CLASSES = [f"class{index:02d}" for index in range(25)]
FSS_IMAGES_PER_CLASS = 3


def make_fss(root: Path) -> Path:
    """25 classes × 3 images of 24×24; masks are RGB PNGs with values 0, 127 (background), 128, 255."""
    for class_index, name in enumerate(FSS_CLASSES):
        for number in range(1, FSS_IMAGES_PER_CLASS + 1):
            folder = root / "FSS-1000" / name
            write_jpeg(folder / f"{number}.jpg", 24, 24, class_index * 10 + number)
            grey = np.zeros((24, 24), dtype=np.uint8)
            grey[4:12, 4:20] = 255
            grey[12:16, 4:20] = 128
            grey[16:20, 4:20] = 127
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / f"{number}.png")
    return root


# --- DAVIS-2017 -----------------------------------------------------------------------------------------

DAVIS_SEQUENCES = {"bears": 4, "dogs-jump": 3}
DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (252 * 3) + [224, 224, 192]


def davis_labels(frame: int) -> np.ndarray:
    """24×32 labels: object 1 moves right, object 2 stays, a 255 void pixel row in frame 2."""
    labels = np.zeros((24, 32), dtype=np.uint8)
    labels[4:10, 2 + frame : 8 + frame] = 1
    labels[14:20, 20:28] = 2
    if frame == 2:
        labels[0, :] = 255
    return labels


def make_davis(root: Path) -> Path:
    for sequence, frames in DAVIS_SEQUENCES.items():
        for frame in range(frames):
            write_jpeg(root / "JPEGImages" / "480p" / sequence / f"{frame:05d}.jpg", 24, 32, frame)
            path = root / "Annotations" / "480p" / sequence / f"{frame:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(davis_labels(frame), mode="P")
            image.putpalette(DAVIS_PALETTE)
            image.save(path)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{sequence}\n" for sequence in DAVIS_SEQUENCES))
    return root


# --- checks on generated datasets ---------------------------------------------------------------------


def folder_digest(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file below ``folder`` (equal dicts: byte-identical trees)."""
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
