"""Pipeline step: Table 3 — one trained model on an out-of-distribution dataset, one-shot, no fine-tuning.

    python -m components.crossdomain --target fss|davis [--params params.yaml]

The model is ``crossdomain.variant``'s one-shot run of fold ``crossdomain.fold`` (``best.pt``; the
paper's is trained on COCO-20i's base classes). FSS-1000: every test-class image is a query once,
its support another image of the class (seeded), scored like the benchmark (mIoU over the test classes,
FB-IoU, at the original mask resolution). DAVIS-17: every frame but the first is a query for each
object of its sequence, the first frame and its mask the support; J, F and J&F-Mean as the official
evaluation defines them (first and last frames excluded). With ``evaluate.baseline`` the parameter-free
baseline (thresholded prototype cosine similarity of the same frozen encoder, its threshold tuned on the
training benchmark's base classes of the fold, as in ``components.evaluate``) is scored on the same
episodes. Writes ``metrics.json``, a per-class (FSS) or per-object (DAVIS) CSV and overlays of a fixed
handful of episodes (see docs/artifacts.md).

Under ``torchrun`` each rank predicts every W-th batch (a batch never splits the objects of a DAVIS frame,
so a frame is merged where it was predicted), the per-class counts (FSS) or per-object frame scores
(DAVIS) of all ranks are combined in the one-process order, and only rank 0 writes: the outputs equal a
one-process run's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.benchmark_data import FoldData
from components.cli import params_main
from components.config import Params
from components.crossdomain_config import SHOT
from components.evaluate import overlay_indices, per_class_table, tuned_baseline, write_overlays
from fsdino.data.benchmark import Split, evaluation_episodes, open_split, read_manifest
from fsdino.data.dataset import EpisodeDataset, grouped_batches, make_loader
from fsdino.data.transforms import EvalTransform
from fsdino.errors import InputError
from fsdino.evaluation.davis import DavisMeter
from fsdino.evaluation.distributed import reduce_meter
from fsdino.evaluation.engine import EpisodeOutput, Prediction, score
from fsdino.evaluation.metrics import SegmentationMeter
from fsdino.io.atomic import atomic_path, write_json_atomic
from fsdino.models.build import load_fsdino
from fsdino.training.runtime import Runtime, runtime

#: The split each target is scored on.
SPLITS = {"fss": "test", "davis": "val"}
HEADLINE = ("miou", "fb_iou", "J", "F", "J&F")


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)


class FssScores:
    """mIoU over the split's classes and FB-IoU, as the few-shot benchmarks are scored (``per_class.csv``)."""

    table_name = "per_class.csv"

    def __init__(self, split: Split) -> None:
        self.classes = tuple(sorted({class_id for _, class_id in split.pairs}))
        self.names = {class_id: name for name, class_id in split.source.class_ids.items()}
        self.meter = SegmentationMeter(self.classes)

    def update(self, item: EpisodeOutput, image_id: str) -> None:
        self.meter.update(item.prediction[None], item.truth[None], [item.class_id])

    def merge_ranks(self, rt: Runtime) -> None:
        """Sum the ranks' counts (every rank scored its share of the batches)."""
        reduce_meter(self.meter, rt)

    def result(self) -> tuple[dict[str, Any], pd.DataFrame]:
        summary = {k: v for k, v in self.meter.summary().items() if k != "episodes"}
        return {**summary, "classes": len(self.classes)}, per_class_table(self.meter, self.names)


class DavisScores:
    """J, F and J&F-Mean over the objects (``per_object.csv``); a sequence's last frame is predicted but not
    scored (its first frame is the support, never a query). A frame is scored once all its objects are
    predicted, on their merge into one label map (``fsdino.evaluation.davis.merge_objects``)."""

    table_name = "per_object.csv"

    def __init__(self, split: Split) -> None:
        source = split.source
        self.last_frame = {source.sequence(index): source.image_id(index) for index in range(len(source))}
        self.objects = {sequence: source.objects(sequence) for sequence in self.last_frame}
        self.pending: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self.meter = DavisMeter()
        #: (index of the episode that completed the frame, sequence, object, J, F), in scoring order
        self.records: list[tuple[int, str, int, float, float]] = []

    def update(self, item: EpisodeOutput, image_id: str) -> None:
        sequence = image_id.split("/")[0]
        if image_id == self.last_frame[sequence]:
            return
        frame = self.pending.setdefault(image_id, {})
        frame[item.class_id] = (item.logits.numpy(), item.truth.numpy())
        if len(frame) == len(self.objects[sequence]):
            del self.pending[image_id]
            logits = {object_id: scores for object_id, (scores, _) in frame.items()}
            truths = {object_id: truth for object_id, (_, truth) in frame.items()}
            scores = self.meter.update_frame(sequence, logits, truths)
            self.records += [(item.index, sequence, object_id, j, f) for object_id, (j, f) in scores.items()]

    def merge_ranks(self, rt: Runtime) -> None:
        """Rebuild the meter from every rank's frame scores in the order one process scores them (by the
        episode that completes each frame, then object id), so that every mean adds the same numbers in
        the same order; frames left incomplete on any rank stay pending."""
        if not rt.distributed:
            return
        records = sorted(rt.gather_lists(self.records))
        self.pending = {image_id: {} for image_id in rt.gather_lists(sorted(self.pending))}
        self.records, self.meter = records, DavisMeter()
        for _, sequence, object_id, j, f in records:
            self.meter.frames.setdefault(f"{sequence}/{object_id}", []).append((j, f))

    def result(self) -> tuple[dict[str, Any], pd.DataFrame]:
        if self.pending:
            raise InputError(f"DAVIS: frame {sorted(self.pending)[0]} lacks predictions of some of its objects")
        rows = [
            {"sequence": key.split("/")[0], "object": int(key.split("/")[1]), "J": j, "F": f, "JF": (j + f) / 2,
             "frames": len(self.meter.frames[key])}
            for key, (j, f) in self.meter.object_scores().items()
        ]  # fmt: skip
        return self.meter.summary(), pd.DataFrame(rows, columns=["sequence", "object", "J", "F", "JF", "frames"])


SCORES = {"fss": FssScores, "davis": DavisScores}


def score_pass(
    model: Callable,
    dataset: EpisodeDataset,
    scores: FssScores | DavisScores,
    params: Params,
    rt: Runtime,
    keep: set[int] | None = None,
) -> list[Prediction]:
    """Predict every episode of ``dataset``, scoring each as it comes (no mask is kept); returns those in ``keep``.

    Batches hold whole query frames (the episodes of a frame's objects, consecutive in ``dataset``); under
    ``torchrun`` this rank predicts every W-th of them, and ``scores`` and the kept predictions are then
    combined over the ranks, on every rank.
    """
    settings = params.crossdomain
    query_ids = [episode.query_id for episode in dataset.episodes]
    loader = make_loader(
        dataset, batch_size=settings.batch_size, num_workers=params.train.loop.num_workers,
        batches=grouped_batches(query_ids, settings.batch_size), rank=rt.rank, world_size=rt.world_size,
    )  # fmt: skip

    def update(item: EpisodeOutput) -> None:
        scores.update(item, query_ids[item.index])

    resolution = params.evaluate.resolution
    progress = keep is not None and rt.is_main
    kept = score(model, loader, rt, update, resolution=resolution, keep=keep, progress=progress, across_ranks=True)
    scores.merge_ranks(rt)
    return kept


def run(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    name, settings = args.target, params.crossdomain
    settings.require(name)
    checkpoint = params.train.run_dir(settings.variant, settings.fold, SHOT) / "best.pt"
    if not checkpoint.is_file():
        raise InputError(
            f"{checkpoint}: no trained model (run the train step for {settings.variant}, fold {settings.fold}, 1-shot)"
        )
    stage_dir = settings.stage_dir(name)
    split = open_split(stage_dir, SPLITS[name])
    if split.dataset != name:
        raise InputError(f"{stage_dir}/manifest.json: dataset is {split.dataset!r}, expected {name!r}")
    model, config, _ = load_fsdino(checkpoint)
    episodes = evaluation_episodes(split, SHOT, seed=params.evaluate.seed)
    dataset = EpisodeDataset(split.source, episodes, EvalTransform(config.image_size), training=False)
    keep = overlay_indices(len(episodes), settings.overlays)
    scores, baseline_summary = SCORES[name](split), None
    with runtime(params.train.loop.device, params.train.loop.amp) as rt:
        model.to(rt.device).eval()
        kept = score_pass(model, dataset, scores, params, rt, keep)
        if params.evaluate.baseline:
            fold_data = FoldData.open(params.benchmark.out, settings.fold)
            baseline = tuned_baseline(model, fold_data, SHOT, config.image_size, rt)
            base_scores = SCORES[name](split)
            score_pass(baseline, dataset, base_scores, params, rt)
            baseline_summary = {**base_scores.result()[0], "threshold": baseline.threshold}
        is_main = rt.is_main
    summary, table = scores.result()
    if not is_main:  # the other ranks hold the same numbers; one writer
        return {"target": name, "episodes": len(episodes)}
    out_dir = settings.run_dir(name)
    _write_csv(table, out_dir / scores.table_name)
    overlays = write_overlays(kept, out_dir / "overlays")
    metrics = {
        "dataset": name, "split": SPLITS[name], "variant": settings.variant, "fold": settings.fold, "shot": SHOT,
        "trained_on": params.benchmark.kind, "checkpoint": str(checkpoint),
        "episodes": len(episodes), **summary, "seed": params.evaluate.seed,
        "resolution": params.evaluate.resolution, "overlays": overlays, "baseline": baseline_summary,
        "split_rule": read_manifest(stage_dir).get("split_rule"),  # FSS-1000: HSNet's lists or the seeded rule
    }  # fmt: skip
    write_json_atomic(out_dir / "metrics.json", metrics)
    headline = {k: v for k, v in summary.items() if k in HEADLINE}
    if baseline_summary is not None:
        headline.update({f"baseline_{k}": v for k, v in baseline_summary.items() if k in HEADLINE})
    write_json_atomic(settings.scores_path(name), {"episodes": len(episodes), **headline})
    return {"target": name, "episodes": len(episodes), **headline, "out_dir": str(out_dir)}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, choices=sorted(SPLITS))


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0], _arguments, lambda args: f"crossdomain@{args.target}")


if __name__ == "__main__":
    sys.exit(main())
