"""DAVIS-17 semi-supervised metrics: region similarity J and boundary accuracy F (as the official DAVIS
evaluation defines them), aggregated into J&F-Mean.

* J = |S∩G| / |S∪G|, 1 when both are empty.
* F: boundary maps of prediction and truth (a pixel is boundary when it differs from its right, lower or
  lower-right neighbour), each matched within a disk of radius ⌈0.008 · image diagonal⌉ (8 px at
  854×480); precision and recall from the matched boundary pixels; both boundaries empty → 1, one
  empty → 0.
* First and last frames are excluded; per object, mean over frames; means over objects; J&F = (J+F)/2.
* The official toolkit scores one indexed PNG per frame, so an object's mask is its pixels in the frame's
  single label map: a model that segments each object separately must merge its masks first
  (:func:`merge_objects`: highest logit wins, background where no object's logit is positive).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import binary_dilation

BOUNDARY_FRACTION = 0.008


def region_similarity(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J for one frame: H×W bool masks → IoU (1.0 when both are empty)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """H×W bool → H×W bool boundary: pixels that differ from their right, lower or lower-right neighbour."""
    mask = mask.astype(bool)
    right = np.zeros_like(mask)
    below = np.zeros_like(mask)
    diagonal = np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def disk(radius: int) -> np.ndarray:
    """(2r+1)×(2r+1) bool structuring element with x² + y² ≤ r²."""
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xs**2 + ys**2 <= radius**2


def boundary_f_measure(prediction: np.ndarray, truth: np.ndarray) -> float:
    """F for one frame (H×W bool masks)."""
    height, width = truth.shape
    radius = math.ceil(BOUNDARY_FRACTION * math.hypot(height, width))
    pred_boundary, true_boundary = boundary_map(prediction), boundary_map(truth)
    n_pred, n_true = int(pred_boundary.sum()), int(true_boundary.sum())
    if n_pred == 0 and n_true == 0:
        return 1.0
    if n_pred == 0 or n_true == 0:
        return 0.0
    element = disk(radius)
    precision = (pred_boundary & binary_dilation(true_boundary, element)).sum() / n_pred
    recall = (true_boundary & binary_dilation(pred_boundary, element)).sum() / n_true
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def object_scores(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean J and mean F of one object over a sequence's frames, first and last excluded."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predicted frames for {len(truths)} annotated frames")
    if len(truths) < 3:
        raise ValueError("a sequence needs at least 3 frames (the first and last are excluded)")
    pairs = list(zip(predictions[1:-1], truths[1:-1], strict=True))
    j = float(np.mean([region_similarity(p, t) for p, t in pairs]))
    f = float(np.mean([boundary_f_measure(p, t) for p, t in pairs]))
    return j, f


def jf_mean(scores: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Aggregate per-object (J, F) into J-Mean, F-Mean and J&F-Mean (means over objects)."""
    if not scores:
        raise ValueError("no objects to score")
    j_mean = float(np.mean([j for j, _ in scores.values()]))
    f_mean = float(np.mean([f for _, f in scores.values()]))
    return {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2}


def frame_scores(prediction: np.ndarray, truth: np.ndarray, void: int = 255) -> tuple[float, float]:
    """(J, F) of one frame: H×W bool prediction against H×W truth {0, 1, ``void``}.

    Void pixels are dropped from both masks, as the official evaluation does with its void mask.
    """
    truth = np.asarray(truth)
    keep = truth != void
    return region_similarity(prediction & keep, truth == 1), boundary_f_measure(prediction & keep, truth == 1)


def merge_objects(logits: Mapping[int, np.ndarray]) -> np.ndarray:
    """One frame's per-object predictions → its label map, as the official evaluation reads it.

    Args:
        logits: object id → H×W logits of that object (foreground where > 0).

    Returns:
        H×W int64 label map: at each pixel the object with the highest logit, 0 where no logit is positive
        (ties go to the smaller object id).
    """
    if not logits:
        raise ValueError("no objects to merge")
    object_ids = sorted(logits)
    stacked = np.stack([np.asarray(logits[object_id], dtype=np.float32) for object_id in object_ids])
    labels = np.asarray(object_ids, dtype=np.int64)[stacked.argmax(axis=0)]
    labels[stacked.max(axis=0) <= 0] = 0
    return labels


class DavisMeter:
    """Accumulates per-frame (J, F) per object and aggregates them into J-Mean, F-Mean and J&F-Mean.

    The caller feeds the scored frames only: in the semi-supervised protocol every frame but the first
    (the support) and the last of a sequence.
    """

    def __init__(self) -> None:
        self.frames: dict[str, list[tuple[float, float]]] = {}

    def update(self, object_key: str, prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
        """Score one object's H×W bool mask in one frame (already free of overlaps with other objects)."""
        scores = frame_scores(np.asarray(prediction, dtype=bool), truth)
        self.frames.setdefault(object_key, []).append(scores)
        return scores

    def update_frame(
        self, sequence: str, logits: Mapping[int, np.ndarray], truths: Mapping[int, np.ndarray]
    ) -> dict[int, tuple[float, float]]:
        """Merge one frame's per-object logits (H×W each) into its label map and score every object
        (``truths``: object id → H×W {0, 1, 255}); object keys are ``<sequence>/<object id>``."""
        labels = merge_objects(logits)
        return {
            object_id: self.update(f"{sequence}/{object_id}", labels == object_id, truths[object_id])
            for object_id in sorted(logits)
        }

    def object_scores(self) -> dict[str, tuple[float, float]]:
        """object key → (mean J, mean F) over its scored frames."""
        return {
            key: (float(np.mean([j for j, _ in values])), float(np.mean([f for _, f in values])))
            for key, values in self.frames.items()
        }

    def summary(self) -> dict[str, float | int]:
        return {
            **jf_mean(self.object_scores()),
            "objects": len(self.frames),
            "frames": sum(len(values) for values in self.frames.values()),
        }
