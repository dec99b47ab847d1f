"""Stages a reproduction restored or found up to date get a nested run in its parent MLflow run, with the
DVC hashes of their outputs and their metrics, once per stage and parent (SQLite tracking store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from components.cli import parent_run
from components.config import Params
from components.stage_record import main, record
from components.tracking import OUTCOME_TAG, STAGE_TAG, stage_run
from fsdino.errors import InputError
from tests.components.mlflow_fixtures import sqlite_tracking_fixture  # noqa: F401  (the sqlite_tracking fixture)

EVALUATE, TRAIN, DISTILL = "evaluate@full-0-1", "train@full-0-1", "distill_3"
LOCK = {
    "schema": "2.0",
    "stages": {
        EVALUATE: {"cmd": "python -m components.evaluate", "outs": [
            {"path": "outputs/evaluate/full/fold0_shot1", "md5": "aa11.dir", "size": 10, "nfiles": 1},
            {"path": "outputs/metrics/full/fold0_shot1.json", "md5": "bb22", "size": 5},
        ]},
        DISTILL: {"cmd": "python -m components.distill", "outs": [
            {"path": "outputs/distill/stage3", "md5": "cc33.dir"},
        ]},
    },
}  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path, sqlite_tracking: str) -> tuple[Path, Params]:
    root = tmp_path / "workspace"
    evaluate = root / "outputs/evaluate/full/fold0_shot1"
    evaluate.mkdir(parents=True)
    (evaluate / "metrics.json").write_text(json.dumps({"miou": 0.42, "fb_iou": 0.6, "variant": "full", "ok": True}))
    metrics = root / "outputs/metrics/full/fold0_shot1.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"miou": 0.42, "baseline": {"miou": 0.1}, "nan": float("nan")}))
    (root / "outputs/distill/stage3").mkdir(parents=True)  # no metrics.json: hashes only
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    params = Params.model_validate({"tracking": {"tracking_uri": sqlite_tracking}})
    return root, params


def nested_runs(client: MlflowClient, parent_id: str) -> dict[str, object]:
    parent = client.get_run(parent_id)
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.data.tags[STAGE_TAG]: run for run in found}


def test_restored_and_up_to_date_stages_are_recorded_once_with_hashes_and_metrics(workspace) -> None:
    root, params = workspace
    with parent_run(params, root) as parent, stage_run(TRAIN, tags={OUTCOME_TAG: "ran"}):
        parent_id = parent.info.run_id
    outcomes = {TRAIN: "restored from run-cache", EVALUATE: "restored from run-cache", DISTILL: "up to date"}

    assert record(params, outcomes, root) == {"recorded": [EVALUATE, DISTILL], "present": [TRAIN]}

    client = MlflowClient(params.tracking.tracking_uri)
    runs = nested_runs(client, parent_id)
    assert set(runs) == {TRAIN, EVALUATE, DISTILL}  # the same parent: one reproduction
    evaluate = runs[EVALUATE]
    assert evaluate.info.run_name == EVALUATE and evaluate.info.status == "FINISHED"
    assert evaluate.data.tags[OUTCOME_TAG] == "restored from run-cache"
    assert evaluate.data.tags["dvc.outputs/evaluate/full/fold0_shot1"] == "aa11.dir"
    assert evaluate.data.tags["dvc.outputs/metrics/full/fold0_shot1.json"] == "bb22"
    assert evaluate.data.metrics == {"miou": 0.42, "fb_iou": 0.6, "baseline/miou": 0.1}  # no NaN, no bool
    assert runs[DISTILL].data.tags[OUTCOME_TAG] == "up to date"
    assert runs[DISTILL].data.tags["dvc.outputs/distill/stage3"] == "cc33.dir" and not runs[DISTILL].data.metrics
    assert runs[TRAIN].data.tags[OUTCOME_TAG] == "ran"

    assert record(params, outcomes, root) == {"recorded": [], "present": [TRAIN, EVALUATE, DISTILL]}
    assert len(nested_runs(client, parent_id)) == 3


def test_an_unknown_outcome_is_an_input_error(workspace) -> None:
    root, params = workspace
    with pytest.raises(InputError, match=r"outcomes\['distill_3'\]: expected one of"):
        record(params, {DISTILL: "skipped"}, root)


def test_the_cli_reads_outcomes_and_fails_in_one_line_on_bad_json(workspace, monkeypatch, capsys) -> None:
    root, params = workspace
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    monkeypatch.chdir(root)
    (root / "outcomes.json").write_text("{not json")
    assert main(["--outcomes", "outcomes.json"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (root / "outcomes.json").write_text(json.dumps({DISTILL: "up to date"}))
    assert main(["--outcomes", "outcomes.json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"recorded": [DISTILL], "present": []}
