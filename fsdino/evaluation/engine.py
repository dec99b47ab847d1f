"""Running a model over evaluation episodes and scoring it with the standard protocol.

Predictions are compared at the query's original mask resolution by default (logits upsampled
bilinearly, threshold 0, 255 ignored); ``resolution="input"`` compares at the network's input size
against the nearest-resized mask instead. K-shot episodes are predicted by the model's own fusion of
the K supports, or with ``shot_fusion="vote"`` by HSNet's vote over K one-shot predictions, each
brought to the scored resolution first (``fsdino.evaluation.voting``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from fsdino.evaluation.distributed import reduce_meter
from fsdino.evaluation.metrics import SegmentationMeter
from fsdino.evaluation.voting import VOTE_THRESHOLD, ShotFusion, vote_fraction
from fsdino.progress import progress_disabled
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


def _logits(model: Callable, batch: dict, runtime: Runtime, shots: slice = slice(None)) -> torch.Tensor:
    """B×1×S×S float32 logits of the batch's queries given its supports ``shots``."""
    device = runtime.device
    with runtime.autocast():
        output = model(
            batch["query_image"].to(device),
            batch["support_images"][:, shots].to(device),
            support_foreground(batch["support_masks"][:, shots]).to(device),
        )
    return output.mask_logits.float()


def _scored(logits: torch.Tensor, truths: list[torch.Tensor], resolution: Resolution) -> list[torch.Tensor]:
    """B×1×S×S logits → B H×W logits at each truth's size (``original``) or as they are (``input``)."""
    if resolution == "input":
        return list(logits[:, 0])
    return [
        F.interpolate(item[None], size=truth.shape, mode="bilinear", align_corners=False)[0, 0]
        for item, truth in zip(logits, truths, strict=True)
    ]


def _predictions(
    model: Callable,
    batch: dict,
    runtime: Runtime,
    truths: list[torch.Tensor],
    resolution: Resolution,
    fusion: ShotFusion,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(H×W bool prediction, H×W float logits) per episode; with ``vote`` the logits are the vote fraction
    minus 0.5 (foreground where ≥ 0)."""
    shots = batch["support_images"].shape[1]
    if fusion == "model" or shots == 1:
        return [(item > 0, item) for item in _scored(_logits(model, batch, runtime), truths, resolution)]
    per_shot = [_scored(_logits(model, batch, runtime, slice(k, k + 1)), truths, resolution) for k in range(shots)]
    fractions = [vote_fraction([masks[row] > 0 for masks in per_shot]) for row in range(len(truths))]
    return [(fraction >= VOTE_THRESHOLD, fraction - VOTE_THRESHOLD) for fraction in fractions]


@torch.no_grad()
def predict(
    model: Callable,
    batches: Iterable[dict],
    runtime: Runtime,
    *,
    resolution: Resolution = "original",
    shot_fusion: ShotFusion = "model",
    progress: bool = False,
) -> Iterator[EpisodeOutput]:
    """Run ``model`` (query, supports, support masks → output with ``mask_logits``) over episode batches.

    Args:
        model: FS-DINO or a baseline, in eval mode.
        batches: from ``fsdino.data.dataset.make_loader`` over an evaluation ``EpisodeDataset``.
        runtime: device and autocast.
        resolution: where to compare (module docstring).
        shot_fusion: ``model`` (one forward with the K supports) or ``vote`` (HSNet: one forward per support).
        progress: show a progress bar.
    """
    if shot_fusion not in ("model", "vote"):
        raise ValueError(f"shot_fusion: expected 'model' or 'vote', got {shot_fusion!r}")
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress or progress_disabled(), leave=False):
        truths = list(batch["query_mask"]) if resolution == "input" else list(batch["query_mask_original"])
        predictions = _predictions(model, batch, runtime, truths, resolution, shot_fusion)
        classes = batch["class_id"].tolist()
        for position, ((mask, logits), truth, class_id) in enumerate(zip(predictions, truths, classes, strict=True)):
            index = int(batch["index"][position])
            yield EpisodeOutput(index, class_id, truth.cpu(), mask.cpu(), logits.cpu(), batch, position)


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
    shot_fusion: ShotFusion = "model",
    keep: set[int] | None = None,
    progress: bool = False,
    across_ranks: bool = False,
) -> list[Prediction]:
    """Predict every episode (arguments as :func:`predict`) and hand each to ``update`` as it comes, keeping
    no mask; returns the predictions of the episodes whose indices are in ``keep`` (for overlays). With
    ``across_ranks`` (``batches`` is this rank's share, see :func:`evaluate`) those of every rank, by index."""
    kept: list[Prediction] = []
    for item in predict(model, batches, runtime, resolution=resolution, shot_fusion=shot_fusion, progress=progress):
        update(item)
        if keep and item.index in keep:
            kept.append(kept_prediction(item))
    return sorted(runtime.gather_lists(kept), key=lambda item: item.index) if across_ranks else kept


def evaluate(
    model: Callable,
    batches: Iterable[dict],
    class_ids: Iterable[int],
    runtime: Runtime,
    *,
    resolution: Resolution = "original",
    shot_fusion: ShotFusion = "model",
    keep: set[int] | None = None,
    progress: bool = False,
    across_ranks: bool = False,
) -> tuple[SegmentationMeter, list[Prediction]]:
    """Score ``model`` over episode batches with the standard protocol (arguments as :func:`predict`).

    Args:
        class_ids: the fold's classes (mIoU averages over exactly these).
        keep: episode indices whose predictions are returned for overlays.
        across_ranks: ``batches`` is this rank's share of a ``torchrun`` launch's batches
            (``make_loader(rank=…, world_size=…)``): the counts of all ranks are summed and the kept
            predictions gathered, so every rank returns the one-process result
            (:mod:`fsdino.evaluation.distributed`). Every rank must call it.
    """
    meter = SegmentationMeter(tuple(class_ids))

    def update(item: EpisodeOutput) -> None:
        meter.update(item.prediction[None], item.truth[None], [item.class_id])

    options = {"resolution": resolution, "shot_fusion": shot_fusion, "keep": keep, "progress": progress}
    kept = score(model, batches, runtime, update, **options, across_ranks=across_ranks)
    return (reduce_meter(meter, runtime) if across_ranks else meter), kept
