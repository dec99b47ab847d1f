"""Pipeline step: the standard few-shot evaluation of one trained (variant, fold, shot).

    python -m components.evaluate --variant full --fold 0 --shot 1 [--params params.yaml]

Runs the fold's fixed test episodes (``evaluate.episodes`` with ``evaluate.seed``) through the best
checkpoint, scores them at the original mask resolution (255 ignored), and does the same for the
parameter-free baseline (thresholded prototype cosine similarity of the same frozen encoder, its
threshold tuned on base-class episodes). Writes ``metrics.json``, ``per_class.csv`` and overlays of a
fixed handful of episodes (see docs/artifacts.md).

Under ``torchrun`` each rank scores every W-th batch of the episodes, the counts are summed across the
ranks (the metrics equal the one-process run's exactly, :mod:`fsdino.evaluation.distributed`), rank 0
tunes the baseline's threshold for all, and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image

from components.benchmark_data import FoldData
from components.cli import fold_step_arguments, fold_step_name, params_main
from components.config import Params
from components.features import attach_memo
from fsdino.data.dataset import make_loader
from fsdino.errors import InputError
from fsdino.evaluation.engine import Prediction, evaluate, support_foreground
from fsdino.evaluation.metrics import SegmentationMeter
from fsdino.io.atomic import atomic_path, write_json_atomic
from fsdino.models.baseline import PrototypeBaseline, best_threshold
from fsdino.models.build import load_fsdino
from fsdino.models.fsdino import FSDINO
from fsdino.training.runtime import Runtime, runtime
from fsdino.viz import episode_panel

THRESHOLDS = torch.linspace(-0.5, 0.95, 30)
TUNING_EPISODES = 64


def overlay_indices(num_episodes: int, count: int) -> set[int]:
    """``count`` episode indices spread evenly over the list (the same in every run)."""
    if count <= 0:
        return set()
    return {round(i * (num_episodes - 1) / max(count - 1, 1)) for i in range(min(count, num_episodes))}


@torch.no_grad()
def tune_baseline(baseline: PrototypeBaseline, data: FoldData, shot: int, image_size: int, rt: Runtime) -> float:
    """Pick the similarity threshold on base-class episodes (never the novel classes it is scored on)."""
    dataset = data.base_episodes_for_tuning(shot, image_size, TUNING_EPISODES, seed=0)
    similarities, targets = [], []
    for batch in make_loader(dataset, batch_size=16):
        supports = support_foreground(batch["support_masks"]).to(rt.device)
        pcs = baseline.similarity(batch["query_image"].to(rt.device), batch["support_images"].to(rt.device), supports)
        similarities.append(pcs[:, 0].cpu())
        targets.append(batch["query_mask"])
    return best_threshold(torch.cat(similarities), torch.cat(targets), THRESHOLDS)


def tuned_baseline(model: FSDINO, data: FoldData, shot: int, image_size: int, rt: Runtime) -> PrototypeBaseline:
    """The parameter-free baseline on ``model``'s frozen encoder, its threshold tuned on ``data``'s base classes
    (by rank 0 alone under ``torchrun``: every rank gets its threshold)."""
    baseline = PrototypeBaseline(model.encoder)
    threshold = tune_baseline(baseline, data, shot, image_size, rt) if rt.is_main else None
    baseline.threshold = rt.broadcast(threshold)
    return baseline


def per_class_table(meter: SegmentationMeter, names: dict[int, str]) -> pd.DataFrame:
    ious = meter.class_iou()
    rows = [
        {
            "class_id": class_id,
            "class_name": names.get(class_id, str(class_id)),
            "iou": ious[class_id],
            "intersection": int(meter.sums[class_id][0]),
            "union": int(meter.sums[class_id][1]),
            "episodes": meter.episodes[class_id],
        }
        for class_id in meter.class_ids
    ]
    return pd.DataFrame(rows, columns=["class_id", "class_name", "iou", "intersection", "union", "episodes"])


def write_overlays(predictions: list[Prediction], folder: Path) -> list[str]:
    written = []
    for item in sorted(predictions, key=lambda p: p.index):
        panel = episode_panel(
            item.support_images.numpy(), item.support_masks.numpy(), item.query_image.numpy(),
            item.truth.numpy(), item.prediction.numpy(),
        )  # fmt: skip
        path = folder / f"episode_{item.index:04d}.png"
        with atomic_path(path) as temporary:
            Image.fromarray(panel).save(temporary, format="PNG")
        written.append(path.name)
    return written


def run(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    variant, fold, shot = args.variant, args.fold, args.shot
    checkpoint = params.train.run_dir(variant, fold, shot) / "best.pt"
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: no trained model (run the train step for {variant}, fold {fold}, {shot}-shot)")
    settings = params.evaluate
    model, config, _ = load_fsdino(checkpoint)
    if config.image_size == params.model.image_size and config.encoder == params.model.encoder:
        attach_memo(params, model.encoder)
    data = FoldData.open(params.benchmark.out, fold).keep_decoded(params.train.keep_decoded)
    episodes = data.test_episodes(shot, settings.episodes, settings.seed)
    dataset = data.test_dataset(episodes, config.image_size)
    keep = overlay_indices(len(episodes), settings.overlays)
    with runtime(params.train.loop.device, params.train.loop.amp) as rt:
        model.to(rt.device)
        loading = {"batch_size": settings.batch_size, "num_workers": params.train.loop.num_workers,
                   "rank": rt.rank, "world_size": rt.world_size}  # fmt: skip
        options = {"resolution": settings.resolution, "shot_fusion": settings.shot_fusion, "across_ranks": True}
        meter, kept = evaluate(model, make_loader(dataset, **loading), data.novel_classes, rt, **options, keep=keep,
                               progress=rt.is_main)  # fmt: skip
        baseline_summary = None
        if settings.baseline:
            baseline = tuned_baseline(model, data, shot, config.image_size, rt)
            base_meter, _ = evaluate(baseline, make_loader(dataset, **loading), data.novel_classes, rt, **options)
            baseline_summary = {**base_meter.summary(), "threshold": baseline.threshold}
        is_main = rt.is_main
    if not is_main:  # the other ranks hold the same numbers; one writer
        return {"variant": variant, "fold": fold, "shot": shot, **meter.summary()}
    out_dir = settings.run_dir(variant, fold, shot)
    table = per_class_table(meter, data.class_names)
    with atomic_path(out_dir / "per_class.csv") as temporary:
        table.to_csv(temporary, index=False)
    overlays = write_overlays(kept, out_dir / "overlays")
    metrics = {
        "dataset": data.test.dataset, "variant": variant, "fold": fold, "shot": shot, **meter.summary(),
        "seed": settings.seed, "resolution": settings.resolution, "shot_fusion": settings.shot_fusion,
        "classes": list(data.novel_classes),
        "missing_classes": meter.missing_classes, "baseline": baseline_summary, "overlays": overlays,
    }  # fmt: skip
    write_json_atomic(out_dir / "metrics.json", metrics)
    summary = {k: metrics[k] for k in ("variant", "fold", "shot", "miou", "fb_iou", "episodes")}
    if baseline_summary is not None:
        summary.update(baseline_miou=baseline_summary["miou"], baseline_fb_iou=baseline_summary["fb_iou"])
    write_json_atomic(settings.scores_path(variant, fold, shot), scores_of(summary))
    return {**summary, "out_dir": str(out_dir)}


def scores_of(summary: dict[str, Any]) -> dict[str, float | int]:
    """The numbers of ``summary`` (what ``dvc metrics show`` tabulates per variant/fold/shot)."""
    skip = ("variant", "fold", "shot")
    return {k: v for k, v in summary.items() if k not in skip and isinstance(v, int | float)}


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0], fold_step_arguments, fold_step_name("evaluate"))


if __name__ == "__main__":
    sys.exit(main())
