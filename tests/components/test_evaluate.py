"""The evaluate step's K-shot modes on a tiny staged benchmark: the model's fusion and HSNet's vote are scored
on the same episodes, and metrics.json says which was used."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import yaml

from components import evaluate, stage_benchmark
from components.config import Params
from components.profile import PROFILES, render
from fsdino.checkpoints import save_checkpoint
from fsdino.models.build import build_fsdino, load_fsdino
from tests.conftest import tiny_config

PROFILE_DIR = Path(__file__).resolve().parents[2] / PROFILES


class ShotCounter(torch.nn.Module):
    """The loaded model, recording how many supports each forward gets."""

    def __init__(self, model: torch.nn.Module, calls: list[int]) -> None:
        super().__init__()
        self.model, self.calls = model, calls

    def forward(self, query: torch.Tensor, supports: torch.Tensor, masks: torch.Tensor):
        self.calls.append(supports.shape[1])
        return self.model(query, supports, masks)


def test_five_shot_is_scored_by_the_fusion_or_by_hsnets_vote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    values = yaml.safe_load(render("demo", PROFILE_DIR))
    values["tracking"] = {"enabled": False}
    values["features"]["memo"] = False
    values["benchmark"]["synthetic"].update(num_images=40, min_size=64, max_size=80)
    values["evaluate"].update(episodes=6, overlays=0, baseline=False)
    stage_benchmark.run(Params.model_validate(values))
    torch.manual_seed(0)
    config = tiny_config("full")
    save_checkpoint(Path("outputs/train/full/fold0_shot5/best.pt"), build_fsdino(config), config, {"epoch": 1})
    calls: list[int] = []

    def counted(path: Path):
        model, model_config, metadata = load_fsdino(path)
        return ShotCounter(model, calls), model_config, metadata

    monkeypatch.setattr(evaluate, "load_fsdino", counted)
    results, shots = {}, {}
    for fusion in ("model", "vote"):
        calls.clear()
        values["evaluate"]["shot_fusion"] = fusion
        values["evaluate"]["out_dir"] = f"outputs/evaluate-{fusion}"
        args = argparse.Namespace(variant="full", fold=0, shot=5)
        results[fusion] = evaluate.run(Params.model_validate(values), args)
        metrics = json.loads((Path(results[fusion]["out_dir"]) / "metrics.json").read_text())
        assert metrics["shot_fusion"] == fusion and metrics["episodes"] == 6 and metrics["shot"] == 5
        scores = json.loads(Path("outputs/metrics/evaluate/full/fold0_shot5.json").read_text())  # DVC metrics
        assert scores == {"miou": metrics["miou"], "fb_iou": metrics["fb_iou"], "episodes": 6}
        shots[fusion] = list(calls)
    batches = -(-6 // values["evaluate"]["batch_size"])
    assert shots == {"model": [5] * batches, "vote": [1] * 5 * batches}  # five one-shot passes per batch
