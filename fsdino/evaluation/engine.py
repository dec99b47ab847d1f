"""Running a model over evaluation episodes and scoring it with the standard protocol.

Predictions are compared at the query's original mask resolution by default (logits upsampled
bilinearly, threshold 0, 255 ignored); ``resolution="input"`` compares at the network's input size
against the nearest-resized mask instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from fsdino.evaluation.metrics import SegmentationMeter
from fsdino.training.runtime import Runtime

Resolution = Literal["original", "input"]


class Prediction(NamedTuple):
    """One scored episode, kept for the qualitative overlays (tensors on the CPU)."""

    index: int
    class_id: int
    query_image: torch.Tensor  # 3×S×S
    support_images: torch.Tensor  # K×3×S×S
    support_masks: torch.Tensor  # K×S×S
    truth: torch.Tensor  # H×W {0, 1, 255}
    prediction: torch.Tensor  # H×W bool


def support_foreground(masks: torch.Tensor) -> torch.Tensor:
    """B×K×S×S {0, 1, 255} → float {0, 1} (ignore counts as background for the prototype)."""
    return (masks == 1).float()


@torch.no_grad()
def evaluate(
    model: Callable,
    batches: Iterable[dict],
    class_ids: Iterable[int],
    runtime: Runtime,
    *,
    resolution: Resolution = "original",
    keep: set[int] | None = None,
    progress: bool = False,
) -> tuple[SegmentationMeter, list[Prediction]]:
    """Score ``model`` (query, supports, support masks → output with ``mask_logits``) over episode batches.

    Args:
        model: FS-DINO or a baseline, in eval mode.
        batches: from ``fsdino.data.dataset.make_loader`` over an evaluation ``EpisodeDataset``.
        class_ids: the fold's classes (mIoU averages over exactly these).
        runtime: device and autocast.
        resolution: where to compare (module docstring).
        keep: episode indices whose predictions are returned for overlays.
        progress: show a progress bar.
    """
    meter = SegmentationMeter(tuple(class_ids))
    kept: list[Prediction] = []
    device = runtime.device
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress, leave=False):
        with runtime.autocast():
            output = model(
                batch["query_image"].to(device),
                batch["support_images"].to(device),
                support_foreground(batch["support_masks"]).to(device),
            )
        logits = output.mask_logits.float()
        classes = batch["class_id"].tolist()
        if resolution == "input":
            truths = list(batch["query_mask"])
            predictions = list(logits[:, 0] > 0)
        else:
            truths = batch["query_mask_original"]
            predictions = [
                F.interpolate(item[None], size=truth.shape, mode="bilinear", align_corners=False)[0, 0] > 0
                for item, truth in zip(logits, truths, strict=True)
            ]
        for position, (prediction, truth, class_id) in enumerate(zip(predictions, truths, classes, strict=True)):
            meter.update(prediction[None].cpu(), truth[None].cpu(), [class_id])
            index = int(batch["index"][position])
            if keep and index in keep:
                kept.append(
                    Prediction(
                        index, class_id, batch["query_image"][position], batch["support_images"][position],
                        batch["support_masks"][position], truth.cpu(), prediction.cpu(),
                    )
                )  # fmt: skip
    return meter, kept
