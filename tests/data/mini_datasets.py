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
    "2007_000002": (1, 6),  # fold-0 novel + base: in fold 0's train list (as 6) unless novel images are excluded
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


#: Training images whose objects have exact areas, for HDMNet's list filters (fold 0: classes 1-5 novel):
#: name → objects (class, rows, columns), laid out left to right in a 60×160 image, each in a 1-px 255 ring.
VOC_SIZED_TRAIN = {
    "2009_000001": ((6, 32, 64),),  # 2,048 px: kept (the bound is inclusive)
    "2009_000002": ((7, 23, 89),),  # 2,047 px: dropped, and with it the image
    "2009_000003": ((1, 3, 3), (8, 40, 60)),  # a 9-px novel object: the whole image out under exclude_novel
    "2009_000004": ((8, 50, 50), (9, 20, 20)),  # 2,500 px kept, 400 px dropped
    "2009_000005": ((6, 32, 32), (6, 32, 32)),  # two objects of 1,024 px: the class has 2,048, kept
    "2009_000006": ((6, 50, 60), (8, 30, 70)),  # both kept
    "2009_000007": ((7, 30, 70), (9, 32, 64)),  # both kept
}
VOC_SIZED_VAL = {"2010_000001": ((2, 40, 60),), "2010_000002": ((3, 40, 60),)}
SIZED_HEIGHT, SIZED_WIDTH = 60, 160


def sized_labels(objects: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """60×160 labels with each (class, rows, columns) rectangle at row 4, 4 px apart, in a 255 ring."""
    labels = np.zeros((SIZED_HEIGHT, SIZED_WIDTH), dtype=np.uint8)
    left = 2
    for class_id, rows, columns in objects:
        labels[3 : 4 + rows + 1, left - 1 : left + columns + 1] = 255
        labels[4 : 4 + rows, left : left + columns] = class_id
        left += columns + 4
    return labels


def make_voc_sized(root: Path) -> Path:
    """VOC layout holding :data:`VOC_SIZED_TRAIN` (train) and :data:`VOC_SIZED_VAL` (val.txt)."""
    voc = root / "VOC2012"
    (voc / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    for seed, (name, objects) in enumerate({**VOC_SIZED_TRAIN, **VOC_SIZED_VAL}.items()):
        write_jpeg(voc / "JPEGImages" / f"{name}.jpg", SIZED_HEIGHT, SIZED_WIDTH, seed)
        Image.fromarray(sized_labels(objects), mode="L").save(voc / "SegmentationClassAug" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{name}\n" for name in VOC_SIZED_VAL))
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


def box(left: int, top: int, columns: int, rows: int) -> list[list[int]]:
    """A rectangle polygon that pycocotools fills with exactly ``rows × columns`` pixels."""
    right, bottom = left + columns, top + rows
    return [[left, top, right, top, right, bottom, left, bottom]]


#: train2014 images of exact class areas (fold 0: category 1 novel; 2, 3, 4, 6 base): image id → instances
#: (category, polygon). Areas are of the union of a class's instances, what the class mask holds.
COCO_SIZED_TRAIN = {
    20: ((2, box(2, 4, 64, 32)),),  # 2,048 px: kept
    21: ((3, box(2, 4, 89, 23)),),  # 2,047 px: dropped, the image with it
    22: ((1, box(2, 4, 3, 3)), (4, box(20, 4, 60, 40))),  # a 9-px novel object: image out under exclude_novel
    23: ((2, box(2, 4, 40, 32)), (2, box(34, 4, 40, 32))),  # two instances overlapping by 8 columns: 2,304 px
    24: ((3, box(2, 4, 60, 50)), (6, box(70, 4, 70, 30))),  # 3,000 and 2,100 px: both kept
    25: ((6, box(2, 4, 32, 32)), (6, box(32, 4, 32, 32))),  # 1,024 + 1,024 overlapping by 2 columns: 1,984 px
}


def make_coco_sized(root: Path) -> Path:
    """:func:`make_coco`'s val2014 with :data:`COCO_SIZED_TRAIN` as train2014 (60×160 images)."""
    make_coco(root)
    annotations = [
        {"id": 100 * image_id + number, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
         "segmentation": polygon}
        for image_id, instances in COCO_SIZED_TRAIN.items()
        for number, (category_id, polygon) in enumerate(instances)
    ]  # fmt: skip
    data = coco_instances("train2014", list(COCO_SIZED_TRAIN), annotations)
    for image in data["images"]:
        image.update(height=SIZED_HEIGHT, width=SIZED_WIDTH)
        write_jpeg(root / "train2014" / image["file_name"], SIZED_HEIGHT, SIZED_WIDTH, image["id"])
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
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
