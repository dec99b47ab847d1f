"""Running a model over evaluation episodes and scoring it with the standard protocol.

Predictions are compared at the query's original mask resolution by default (logits upsampled
bilinearly, threshold 0, 255 ignored); ``resolution="input"`` compares at the network's input size
against the nearest-resized mask instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


class EpisodeOutput(NamedTuple):
    """One episode's binary prediction beside its ground truth, and where it sits in its batch."""

    index: int  # the episode's position in the evaluation list
    class_id: int
    truth: torch.Tensor  # H×W {0, 1, 255}, on the CPU
    prediction: torch.Tensor  # H×W bool, on the CPU: logits > 0
    logits: torch.Tensor  # H×W float32, on the CPU, at the scored resolution (to merge objects of a frame)
    batch: dict  # the collated batch it came from
    position: int  # its row in ``batch``


@torch.no_grad()
def predict(
    model: Callable,
    batches: Iterable[dict],
    runtime: Runtime,
    *,
    resolution: Resolution = "original",
    progress: bool = False,
) -> Iterator[EpisodeOutput]:
    """Run ``model`` (query, supports, support masks → output with ``mask_logits``) over episode batches.

    Args:
        model: FS-DINO or a baseline, in eval mode.
        batches: from ``fsdino.data.dataset.make_loader`` over an evaluation ``EpisodeDataset``.
        runtime: device and autocast.
        resolution: where to compare (module docstring).
        progress: show a progress bar.
    """
    device = runtime.device
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress, leave=False):
        with runtime.autocast():
            output = model(
                batch["query_image"].to(device),
                batch["support_images"].to(device),
                support_foreground(batch["support_masks"]).to(device),
            )
        logits = output.mask_logits.float()
        if resolution == "input":
            truths = list(batch["query_mask"])
            scored = list(logits[:, 0])
        else:
            truths = batch["query_mask_original"]
            scored = [
                F.interpolate(item[None], size=truth.shape, mode="bilinear", align_corners=False)[0, 0]
                for item, truth in zip(logits, truths, strict=True)
            ]
        classes = batch["class_id"].tolist()
        for position, (item, truth, class_id) in enumerate(zip(scored, truths, classes, strict=True)):
            index, item = int(batch["index"][position]), item.cpu()
            yield EpisodeOutput(index, class_id, truth.cpu(), item > 0, item, batch, position)


def kept_prediction(item: EpisodeOutput) -> Prediction:
    """The episode's tensors for an overlay panel."""
    batch, position = item.batch, item.position
    return Prediction(
        item.index, item.class_id, batch["query_image"][position], batch["support_images"][position],
        batch["support_masks"][position], item.truth, item.prediction,
    )  # fmt: skip


def score(
    model: Callable,
    batches: Iterable[dict],
    runtime: Runtime,
    update: Callable[[EpisodeOutput], object],
    *,
    resolution: Resolution = "original",
    keep: set[int] | None = None,
    progress: bool = False,
) -> list[Prediction]:
    """Predict every episode (arguments as :func:`predict`) and hand each to ``update`` as it comes, keeping
    no mask; returns the predictions of the episodes whose indices are in ``keep`` (for overlays)."""
    kept: list[Prediction] = []
    for item in predict(model, batches, runtime, resolution=resolution, progress=progress):
        update(item)
        if keep and item.index in keep:
            kept.append(kept_prediction(item))
    return kept


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
    """Score ``model`` over episode batches with the standard protocol (arguments as :func:`predict`).

    Args:
        class_ids: the fold's classes (mIoU averages over exactly these).
        keep: episode indices whose predictions are returned for overlays.
    """
    meter = SegmentationMeter(tuple(class_ids))

    def update(item: EpisodeOutput) -> None:
        meter.update(item.prediction[None], item.truth[None], [item.class_id])

    return meter, score(model, batches, runtime, update, resolution=resolution, keep=keep, progress=progress)
