"""Under ``torchrun`` only rank 0 tracks a pipeline step and prepares its work folder (``components/cli.py``): the
other ranks (``RANK`` ≠ 0) run the step without creating MLflow runs, print no summary and leave the folder alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
import yaml

from components.cli import params_main, prepare_work_dir, tracked
from components.config import Params
from components.tracking import TrackingConfig
from tests.components.mlflow_fixtures import sqlite_tracking_fixture  # noqa: F401  (the sqlite_tracking fixture)


def all_runs() -> list[mlflow.entities.Run]:
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_a_non_zero_rank_runs_the_step_without_mlflow(
    sqlite_tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the parent run's id file would go to outputs/.work/mlflow/
    params = Params(tracking=TrackingConfig(tracking_uri=sqlite_tracking))
    ranks: list[str] = []

    def step() -> dict[str, float]:
        ranks.append(os.environ["RANK"])
        return {"miou": 0.5}

    monkeypatch.setenv("RANK", "1")
    assert tracked(params, "train@full-0-1", step) == {"miou": 0.5}
    assert ranks == ["1"] and all_runs() == [] and mlflow.active_run() is None
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlruns").exists()

    monkeypatch.setenv("RANK", "0")  # rank 0 (as a process without torchrun) tracks as before
    assert tracked(params, "train@full-0-1", step) == {"miou": 0.5}
    runs = all_runs()
    assert ranks == ["1", "0"] and len(runs) == 2
    (nested,) = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert nested.data.tags["fsdino.stage"] == "train@full-0-1" and nested.data.metrics == {"miou": 0.5}


@pytest.mark.parametrize(("rank", "printed"), [("1", False), ("0", True)])
def test_only_rank_0_prints_the_summary(
    sqlite_tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    rank: str, printed: bool,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "params.yaml"
    # a complete file, as a step reads it (a missing section is an error)
    path.write_text(
        yaml.safe_dump(Params(tracking=TrackingConfig(tracking_uri=sqlite_tracking)).model_dump(mode="json"))
    )
    monkeypatch.setenv("RANK", rank)
    code = params_main(lambda params, args: {"epochs": 3}, ["--params", str(path)], "test", stage_name=lambda _: "x")
    assert code == 0
    out = capsys.readouterr().out
    assert (json.loads(out) if printed else out) == ({"epochs": 3} if printed else "")
    assert len(all_runs()) == (2 if printed else 0)


def test_only_rank_0_empties_a_work_dir_of_another_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "fingerprint.txt").write_text("old\n")
    (work_dir / "state.pt").write_bytes(b"stale")
    monkeypatch.setenv("RANK", "1")
    assert prepare_work_dir(work_dir, "new") == work_dir
    assert sorted(path.name for path in work_dir.iterdir()) == ["fingerprint.txt", "state.pt"]
    assert (work_dir / "fingerprint.txt").read_text() == "old\n"
    monkeypatch.setenv("RANK", "0")
    assert prepare_work_dir(work_dir, "new") == work_dir
    assert sorted(path.name for path in work_dir.iterdir()) == ["fingerprint.txt"]
    assert (work_dir / "fingerprint.txt").read_text() == "new\n"
