"""The evaluate and features steps under ``torchrun --nproc-per-node=2`` (gloo, CPU) write what one process
writes.

Each rank scores every other batch of the episodes and the intersections/unions are summed across the
ranks (``fsdino/evaluation/distributed.py``), so the metrics must be equal exactly, not within a tolerance:
every batch holds the same episodes as in the one-process run and the sums are of integer pixel counts.
The features step deals out groups of images the same way and rank 0 merges the ranks' features; the
cross-domain step keeps a DAVIS frame's objects in one batch and rebuilds the per-object frame scores in
the one-process order.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from components import stage_benchmark, stage_crossdomain
from components.config import Params
from components.profile import PROFILES, render
from fsdino.checkpoints import save_checkpoint
from fsdino.data.dataset import grouped_batches, rank_batches
from fsdino.models.build import build_fsdino
from tests.conftest import tiny_config
from tests.launch import ROOT, TORCHRUN_2, run_step

EPISODES, BATCH = 9, 2  # 5 batches: rank 0 scores 3, rank 1 scores 2


@pytest.mark.parametrize(("items", "batch", "world"), [(9, 2, 2), (10, 4, 2), (3, 8, 2), (17, 3, 4), (5, 5, 1)])
def test_the_ranks_batches_are_the_one_process_batches_dealt_out(items: int, batch: int, world: int) -> None:
    alone = rank_batches(items, batch, 0, 1)
    assert [i for b in alone for i in b] == list(range(items)) and all(len(b) == batch for b in alone[:-1])
    dealt = [rank_batches(items, batch, rank, world) for rank in range(world)]
    assert sorted(b for part in dealt for b in part) == alone  # each batch once, unchanged
    assert all(dealt[rank] == alone[rank::world] for rank in range(world))
    assert rank_batches(10, 4, 1, 2) == [[4, 5, 6, 7]]
    assert rank_batches(10, 4, 0, 2, drop_last=True) == [[0, 1, 2, 3]]


def test_grouped_batches_keep_runs_of_a_key_together() -> None:
    assert grouped_batches(["a", "a", "b", "b", "b", "c"], 4) == [[0, 1], [2, 3, 4, 5]]
    assert grouped_batches(["a"] * 5 + ["b"], 2) == [[0, 1, 2, 3, 4], [5]]  # a longer run is a batch of its own
    assert grouped_batches(list("abcde"), 2) == rank_batches(5, 2, 0, 1)  # distinct keys: consecutive batches


def _project(root: Path, memo: bool = False, crossdomain: bool = False) -> None:
    """A tiny staged benchmark, a random-weight checkpoint of fold 0 one-shot, and its params.yaml."""
    root.mkdir()
    cwd = Path.cwd()
    os.chdir(root)
    try:
        values = yaml.safe_load(render("demo", ROOT / PROFILES))
        values["tracking"] = {"enabled": False}
        values["features"].update(memo=memo, batch_size=5)  # 2 views per image: groups of 3 images
        values["benchmark"]["synthetic"].update(num_images=40, min_size=64, max_size=80)
        values["evaluate"].update(episodes=EPISODES, batch_size=BATCH, overlays=3, baseline=True)
        values["crossdomain"].update(batch_size=3, overlays=3)  # DAVIS: 5 batches of whole frames, not 4 of 3
        values["crossdomain"]["fss"]["synthetic"] = {"num_classes": 10, "images_per_class": 3, "size": 48}
        # seed 2: one sequence with 1 object, one with 2, so frames of 1 and of 2 episodes
        values["crossdomain"]["davis"]["synthetic"] = {
            "sequences": 2,
            "frames": 5,
            "height": 54,
            "width": 96,
            "seed": 2,
        }
        stage_benchmark.run(Params.model_validate(values))
        if crossdomain:
            for target in ("fss", "davis"):
                stage_crossdomain.run(Params.model_validate(values), argparse.Namespace(target=target))
        torch.manual_seed(0)
        config = tiny_config("full")
        save_checkpoint(Path("outputs/train/full/fold0_shot1/best.pt"), build_fsdino(config), config, {"epoch": 1})
        Path("params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    finally:
        os.chdir(cwd)


def _alone_and_on_two_ranks(tmp_path: Path, step: list[str], **project: bool) -> tuple[Path, Path, dict]:
    """``python <step>`` in one tiny project and under torchrun with 2 ranks in a twin; the two folders and
    the summary, which only rank 0 prints and which must be the one process's."""
    one, two = tmp_path / "one", tmp_path / "two"
    _project(one, **project)
    _project(two, **project)
    alone = run_step(step, one)
    ranks = run_step([*TORCHRUN_2, *step], two)
    summaries = [json.loads(line) for line in ranks.stdout.splitlines() if line.startswith("{")]
    assert summaries == [json.loads(alone.stdout.splitlines()[-1])]  # rank 0's only
    return one, two, summaries[0]


def _written(root: Path, places: list[str]) -> dict[str, bytes]:
    """Relative path → bytes of every file at or under ``places`` (relative to ``root``)."""
    files = [path for place in places for path in sorted([root / place, *(root / place).rglob("*")]) if path.is_file()]
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


@pytest.mark.slow
def test_two_gloo_ranks_write_the_one_process_metrics_overlays_and_baseline(tmp_path: Path) -> None:
    step = ["-m", "components.evaluate", "--variant", "full", "--fold", "0", "--shot", "1"]
    one, two, _ = _alone_and_on_two_ranks(tmp_path, step)
    metrics = json.loads((one / "outputs/evaluate/full/fold0_shot1/metrics.json").read_text())
    assert metrics["episodes"] == EPISODES and 0 < metrics["miou"] < 1 and metrics["baseline"]["episodes"] == EPISODES
    assert len(metrics["overlays"]) == 3  # kept on both ranks (episodes 0, 4, 8), gathered to rank 0

    places = ["outputs/evaluate/full/fold0_shot1", "outputs/metrics/evaluate/full"]
    written_one, written_two = _written(one, places), _written(two, places)
    assert sorted(written_two) == sorted(written_one) and len(written_one) == 6  # metrics, table, 3 PNGs, DVC
    assert written_two == written_one  # byte for byte: metrics.json, per_class.csv, the overlays


@pytest.mark.slow
def test_two_gloo_ranks_write_the_one_process_feature_memo(tmp_path: Path) -> None:
    one, two, summary = _alone_and_on_two_ranks(tmp_path, ["-m", "components.features"], memo=True)
    assert summary["entries"] > 6  # more than one group per rank
    folder = Path("outputs/features")
    assert (two / folder / "manifest.json").read_bytes() == (one / folder / "manifest.json").read_bytes()
    memo_one = torch.load(one / folder / "memo.pt", weights_only=True)
    memo_two = torch.load(two / folder / "memo.pt", weights_only=True)
    assert sorted(memo_two) == sorted(memo_one) == ["keys", "last", "layer3"]
    for name, tensor in memo_one.items():  # the same keys in the same order, the same fp16 features
        assert torch.equal(memo_two[name], tensor), name


@pytest.mark.slow
@pytest.mark.parametrize("target", ["fss", "davis"])
def test_two_gloo_ranks_write_the_one_process_crossdomain_scores(tmp_path: Path, target: str) -> None:
    step = ["-m", "components.crossdomain", "--target", target]
    one, two, summary = _alone_and_on_two_ranks(tmp_path, step, crossdomain=True)
    assert summary["episodes"] >= 9  # at least 3 batches, so both ranks predict
    if target == "davis":  # a frame of two objects, which consecutive batches of 3 would have split
        objects = pd.read_csv(one / "outputs/evaluate/crossdomain/davis/per_object.csv").groupby("sequence").size()
        assert sorted(objects.tolist()) == [1, 2]
    places = [f"outputs/evaluate/crossdomain/{target}", f"outputs/metrics/crossdomain/{target}.json"]
    assert len(_written(one, places)) == 6  # metrics.json, the per-class/per-object CSV, 3 overlays, DVC metrics
    assert _written(two, places) == _written(one, places)
