"""Few-shot segmentation metrics of the standard (HSNet) protocol.

Per episode, foreground and background intersection and union are counted with ignore pixels (255)
dropped from prediction and ground truth alike, and summed per class over the fold's episodes:

* mIoU = mean over the fold's classes of Σ I_fg / max(Σ U_fg, 1) — a class with no episode counts 0,
  as in the reference (and is listed in ``missing_classes``);
* FB-IoU = mean of the background and the foreground IoU, each one pooled ratio over all episodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE_INDEX = 255


def intersection_and_union(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Counts for a batch of episodes.

    Args:
        prediction: B×H×W bool (or {0, 1}) predicted foreground.
        target: B×H×W ground truth with values {0, 1, 255}.

    Returns:
        B×4 float64: (fg intersection, fg union, bg intersection, bg union) per episode.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    valid = target != IGNORE_INDEX
    pred = prediction.bool() & valid
    truth = (target == 1) & valid
    back_pred, back_truth = ~pred & valid, ~truth & valid
    counts = [
        (pred & truth),
        (pred | truth),
        (back_pred & back_truth),
        (back_pred | back_truth),
    ]
    return torch.stack([c.flatten(1).sum(1) for c in counts], dim=1).double()


@dataclass
class SegmentationMeter:
    """Accumulates per-class intersection and union over a fold's episodes.

    Args:
        class_ids: the fold's (novel) classes; mIoU averages over exactly these.
    """

    class_ids: tuple[int, ...]
    sums: dict[int, np.ndarray] = field(default_factory=dict)
    episodes: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_ids = tuple(int(c) for c in self.class_ids)
        for class_id in self.class_ids:
            self.sums[class_id] = np.zeros(4, dtype=np.float64)
            self.episodes[class_id] = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor, class_ids: Iterable[int]) -> None:
        """Add a batch: prediction and target B×H×W (see :func:`intersection_and_union`), one class per episode."""
        counts = intersection_and_union(torch.as_tensor(prediction), torch.as_tensor(target)).cpu().numpy()
        for row, class_id in zip(counts, class_ids, strict=True):
            class_id = int(class_id)
            if class_id not in self.sums:
                raise ValueError(f"class {class_id} is not one of this fold's classes {self.class_ids}")
            self.sums[class_id] += row
            self.episodes[class_id] += 1

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU per class: Σ I / max(Σ U, 1)."""
        return {c: float(s[0] / max(s[1], 1.0)) for c, s in self.sums.items()}

    @property
    def missing_classes(self) -> list[int]:
        return [c for c, n in self.episodes.items() if n == 0]

    def miou(self) -> float:
        ious = self.class_iou()
        return float(np.mean([ious[c] for c in self.class_ids])) if self.class_ids else 0.0

    def fb_iou(self) -> float:
        total = np.sum(list(self.sums.values()), axis=0) if self.sums else np.zeros(4)
        foreground = total[0] / max(total[1], 1.0)
        background = total[2] / max(total[3], 1.0)
        return float((foreground + background) / 2)

    @property
    def num_episodes(self) -> int:
        return int(sum(self.episodes.values()))

    def summary(self) -> dict[str, float | int]:
        return {"miou": self.miou(), "fb_iou": self.fb_iou(), "episodes": self.num_episodes}
