"""Scoring a folder of predicted masks with the standard protocol, whatever method produced them.

Layout: ``--classes FILE`` lists the episodes' (image, class) pairs, one ``image class`` a line (the split
files the staging steps write); ``--gt DIR`` holds ``<image>.png`` label masks (one class id per pixel,
255 = ignore: VOC's SegmentationClassAug); ``--pred DIR`` holds one binary mask per pair,
``<image>__<class>.png`` (values {0, 1} or {0, 255}), at the ground truth's size. mIoU and FB-IoU are
computed as :mod:`fsdino.evaluation.metrics` defines them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fsdino.errors import InputError
from fsdino.evaluation.metrics import IGNORE_INDEX, SegmentationMeter


def read_pairs(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise InputError(f"{path}: classes file not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit():
            raise InputError(f"{path}: line {number}: expected '<image> <class id>', got {line.strip()!r}")
        pairs.append((fields[0], int(fields[1])))
    if not pairs:
        raise InputError(f"{path}: no (image, class) pairs")
    return pairs


def _read_png(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "1"):
                raise InputError(f"{path}: expected a single-channel {what} (L, P or 1), got mode {image.mode}")
            return np.asarray(image, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: unreadable {what} ({type(error).__name__})") from error


def binary_target(labels: np.ndarray, class_id: int) -> np.ndarray:
    """Label mask → {0, 1, 255} for one class (other classes are background)."""
    target = (labels == class_id).astype(np.uint8)
    target[labels == IGNORE_INDEX] = IGNORE_INDEX
    return target


def score_folder(pred_dir: Path, gt_dir: Path, classes_file: Path) -> tuple[SegmentationMeter, list[dict]]:
    """Score every pair of ``classes_file``; returns the meter and one row per pair."""
    pairs = read_pairs(classes_file)
    meter = SegmentationMeter(tuple(sorted({class_id for _, class_id in pairs})))
    rows = []
    for image_id, class_id in pairs:
        labels = _read_png(gt_dir / f"{image_id}.png", "ground-truth mask")
        pred_path = pred_dir / f"{image_id}__{class_id}.png"
        prediction = _read_png(pred_path, "predicted mask")
        if prediction.shape != labels.shape:
            raise InputError(
                f"{pred_path}: prediction is {prediction.shape[1]}×{prediction.shape[0]}, its ground truth "
                f"{labels.shape[1]}×{labels.shape[0]} (W×H)"
            )
        values = set(np.unique(prediction).tolist())
        if not values <= {0, 1} and not values <= {0, 255}:
            raise InputError(
                f"{pred_path}: expected a binary mask with values {{0,1}} or {{0,255}}, found {sorted(values)}"
            )
        target = binary_target(labels, class_id)
        before = meter.sums[class_id].copy()
        meter.update(torch.from_numpy(prediction > 0)[None], torch.from_numpy(target)[None], [class_id])
        intersection, union = (meter.sums[class_id] - before)[:2]
        rows.append({"image": image_id, "class_id": class_id, "iou": float(intersection / max(union, 1.0))})
    return meter, rows
