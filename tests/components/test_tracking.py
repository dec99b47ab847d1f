"""Tracking layout against a real SQLite store: parent run, nested runs, tags, metrics, artifacts, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from benchmarks.servers import free_port, running
from components.tracking import (
    PROJECT_ROOT,
    RUN_ID_ENV,
    TRACKING_URI_ENV,
    TrackingConfig,
    configure,
    dvc_output_hashes,
    flatten_params,
    git_state,
    log_artifacts_if_exist,
    log_epoch_metrics,
    metric_logger,
    pipeline_run,
    resolve_tracking_uri,
    stage_run,
    tracking_uri,
)
from fsdino.errors import InputError
from tests.components.mlflow_fixtures import (
    isolated_mlflow_state,
    migrated_store,
    sqlite_tracking_fixture,  # noqa: F401  (the sqlite_tracking fixture)
    subprocess_env,
)

DVC_LOCK = """\
schema: '2.0'
stages:
  distill@1:
    cmd: python -m components.distill --stage 1
    deps:
    - path: outputs/data/sa1b/manifest.parquet
      hash: md5
      md5: 0123456789abcdef0123456789abcdef
    outs:
    - path: outputs/distill/stage1
      hash: md5
      md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir
      size: 1234
      nfiles: 3
  evaluate@full-0-1:
    cmd: python -m components.evaluate
    outs:
    - path: outputs/evaluate/full/fold0_shot1/metrics.json
      hash: md5
      md5: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
"""


def test_relative_sqlite_uris_resolve_against_the_root(tmp_path: Path) -> None:
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    default = TrackingConfig()
    assert resolve_tracking_uri(default.tracking_uri) == f"sqlite:///{PROJECT_ROOT}/mlflow.db"
    assert default.experiment_name == default.registered_model_name == "fsdino"


def test_artifact_location_defaults_and_resolution(tmp_path: Path) -> None:
    assert TrackingConfig().resolved_artifact_location(tmp_path) == (tmp_path / "mlruns").resolve().as_uri()
    assert TrackingConfig(tracking_uri="http://host:5000").resolved_artifact_location(tmp_path) is None
    relative = TrackingConfig(artifact_location="store/artifacts")
    assert relative.resolved_artifact_location(tmp_path) == (tmp_path / "store/artifacts").resolve().as_uri()
    assert TrackingConfig(artifact_location="s3://b/p").resolved_artifact_location(tmp_path) == "s3://b/p"
    with pytest.raises(ValidationError, match="extra"):
        TrackingConfig(tracking_url="sqlite:///x.db")


def test_dvc_lock_outputs_map_to_md5(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    assert dvc_output_hashes(lock) == {}
    lock.write_text(DVC_LOCK)
    assert dvc_output_hashes(lock) == {
        "outputs/distill/stage1": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir",
        "outputs/evaluate/full/fold0_shot1/metrics.json": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    }
    lock.write_text("stages: [unclosed")
    with pytest.raises(InputError, match=r"dvc\.lock: not valid YAML"):
        dvc_output_hashes(lock)


def test_git_state_is_read_and_its_absence_tolerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_repo = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if in_repo.returncode == 0:
        state = git_state(PROJECT_ROOT)
        assert state["git.commit"] == in_repo.stdout.strip() and state["git.dirty"] in ("true", "false")
    assert git_state(tmp_path) == {}  # not a repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert git_state(PROJECT_ROOT) == {}


def test_flatten_params_makes_dotted_string_keys() -> None:
    params = {"model": {"encoder": {"name": "vit"}, "image_size": 224}, "epochs": 3, "bad key{}": 1}
    assert flatten_params(params) == {
        "model.encoder.name": "vit",
        "model.image_size": "224",
        "epochs": "3",
        "bad key__": "1",
    }


def test_parent_run_with_nested_stage_runs(sqlite_tracking: str, tmp_path: Path) -> None:
    root = tmp_path  # holds mlflow.db (copied by the fixture), dvc.lock and the run-id file
    (root / "dvc.lock").write_text(DVC_LOCK)
    (root / "out").mkdir()
    (root / "out" / "metrics.json").write_text('{"miou": 0.5}')
    (root / "out" / "overlays").mkdir()
    (root / "out" / "overlays" / "episode_0000.png").write_bytes(b"png")
    history = root / "out" / "history.csv"
    history.write_text("stage,image_size,epoch,loss\n1,224,0,0.9\n1,224,1,0.5\n1,224,2,\n")
    config = TrackingConfig()  # sqlite:///mlflow.db, relative to root
    run_id_file = root / "state" / "parent_run_id"

    with pipeline_run(
        config, "demo", {"trigger": "test"}, profile="demo", params={"model": {"image_size": 224}},
        run_id_file=run_id_file, root=root,
    ) as parent:  # fmt: skip
        assert mlflow.get_tracking_uri() == sqlite_tracking
        with stage_run("distill/stage1", params={"epochs": 3, "teacher": {"arch": "tiny"}}) as child:
            assert log_epoch_metrics(history, keys=["loss"]) == 2
            metric_logger("train")({"loss": 0.25, "lr": 1e-3}, 7)
            logged = log_artifacts_if_exist(
                [root / "out" / "metrics.json", root / "out" / "overlays", root / "missing.json"], "evaluate"
            )
    assert logged == [root / "out" / "metrics.json", root / "out" / "overlays"]
    assert run_id_file.read_text().strip() == parent.info.run_id

    client = MlflowClient(sqlite_tracking)
    parent_run = client.get_run(parent.info.run_id)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.params == {"model.image_size": "224"}
    tags = parent_run.data.tags
    assert tags["fsdino.profile"] == "demo" and tags["trigger"] == "test"
    assert tags["dvc.outputs/distill/stage1"] == "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir"
    assert tags["dvc.outputs/evaluate/full/fold0_shot1/metrics.json"] == "b" * 32
    assert client.get_experiment(parent_run.info.experiment_id).artifact_location == (root / "mlruns").as_uri()

    child_run = client.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.tags["fsdino.stage"] == "distill/stage1"
    assert child_run.data.params == {"epochs": "3", "teacher.arch": "tiny"}
    assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "loss")] == [(0, 0.9), (1, 0.5)]
    assert "stage" not in child_run.data.metrics and "image_size" not in child_run.data.metrics
    assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "train/lr")] == [(7, 1e-3)]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "evaluate")}
    assert artifacts == {"evaluate/metrics.json", "evaluate/overlays"}
    assert [a.path for a in client.list_artifacts(child.info.run_id, "evaluate/overlays")] == [
        "evaluate/overlays/episode_0000.png"
    ]


def test_parent_run_is_resumed_from_file_or_environment(
    sqlite_tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrackingConfig(tracking_uri=sqlite_tracking)
    run_id_file = tmp_path / "parent_run_id"
    with pipeline_run(config, "first", params={"seed": 0}, run_id_file=run_id_file, root=tmp_path) as first:
        pass
    # A second process (another DVC stage) joins the same parent; write-once params are not re-logged.
    with (
        pipeline_run(config, "ignored", params={"seed": 1}, run_id_file=run_id_file, root=tmp_path) as again,
        stage_run("train/full/fold0_shot1") as nested,
    ):
        pass
    assert again.info.run_id == first.info.run_id
    assert (
        MlflowClient(sqlite_tracking).get_run(nested.info.run_id).data.tags["mlflow.parentRunId"] == first.info.run_id
    )
    client = MlflowClient(sqlite_tracking)
    assert client.get_run(first.info.run_id).data.params == {"seed": "0"}
    assert client.get_run(first.info.run_id).info.run_name == "first"

    monkeypatch.setenv(RUN_ID_ENV, first.info.run_id)  # an orchestrator's hand-over wins over the file
    run_id_file.write_text("stale\n")
    with pipeline_run(config, "x", run_id_file=run_id_file, root=tmp_path) as from_env:
        assert from_env.info.run_id == first.info.run_id

    monkeypatch.setenv(RUN_ID_ENV, "0" * 32)
    with pytest.raises(InputError, match=RUN_ID_ENV), pipeline_run(config, "x", root=tmp_path):
        pass
    monkeypatch.delenv(RUN_ID_ENV)
    with pipeline_run(config, "fresh", run_id_file=run_id_file, root=tmp_path) as fresh:  # stale file
        assert fresh.info.run_id != first.info.run_id
    assert run_id_file.read_text().strip() == fresh.info.run_id


def test_failed_pipeline_marks_the_run_failed(sqlite_tracking: str, tmp_path: Path) -> None:
    config = TrackingConfig(tracking_uri=sqlite_tracking)
    with pytest.raises(RuntimeError, match="boom"), pipeline_run(config, "broken", root=tmp_path) as run:
        raise RuntimeError("boom")
    assert MlflowClient(sqlite_tracking).get_run(run.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_metric_logger_without_an_active_run_is_a_no_op(sqlite_tracking: str) -> None:
    metric_logger("train")({"loss": 1.0}, 0)  # no run: nothing happens, nothing is created
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_epoch_metrics([{"epoch": 0, "loss": 1.0}])
    with pytest.raises(InputError, match="'epoch'"), mlflow.start_run():
        log_epoch_metrics([{"step": 0, "loss": 1.0}])


def test_isolation_leaves_no_mlflow_state(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    before = {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")}
    with isolated_mlflow_state():
        database = migrated_store(tmp_path_factory, tmp_path)
        mlflow.set_tracking_uri(f"sqlite:///{database}")
        mlflow.set_experiment("leak-check")
        mlflow.start_run()
        assert "MLFLOW_EXPERIMENT_ID" in os.environ and "MLFLOW_TRACKING_URI" in os.environ
    assert {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")} == before
    assert mlflow.active_run() is None
    assert not mlflow.get_tracking_uri().endswith(str(database))


def test_mlflow_tracking_uri_wins_over_params_and_sqlite_stays_the_default(tmp_path: Path, tmp_path_factory) -> None:
    config = TrackingConfig(tracking_uri="sqlite:///params.db")
    with isolated_mlflow_state():
        assert tracking_uri(config, tmp_path) == f"sqlite:///{tmp_path.resolve()}/params.db"
        os.environ[TRACKING_URI_ENV] = "http://127.0.0.1:1"
        assert tracking_uri(config, tmp_path) == "http://127.0.0.1:1"
        os.environ[TRACKING_URI_ENV] = " "
        assert tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
        del os.environ[TRACKING_URI_ENV]
        # mlflow.set_tracking_uri exports its value: a second configure in this process reads its own config
        first, second = (migrated_store(tmp_path_factory, tmp_path / name) for name in ("a", "b"))
        configure(TrackingConfig(tracking_uri=f"sqlite:///{first}"), tmp_path)
        assert os.environ[TRACKING_URI_ENV] == f"sqlite:///{first}"
        configure(TrackingConfig(tracking_uri=f"sqlite:///{second}"), tmp_path)
        assert mlflow.get_tracking_uri() == f"sqlite:///{second}"


@pytest.mark.slow
def test_mlflow_tracking_uri_redirects_a_pipeline_run_to_a_real_server(tmp_path: Path, tmp_path_factory) -> None:
    database = migrated_store(tmp_path_factory, tmp_path / "server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{database}",
        "--artifacts-destination", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    params_store = tmp_path / "project" / "mlflow.db"
    params_store.parent.mkdir()
    with running(command, subprocess_env(), f"{url}/health", tmp_path / "server.log"), isolated_mlflow_state():
        os.environ[TRACKING_URI_ENV] = url
        config = TrackingConfig(tracking_uri="sqlite:///mlflow.db", experiment_name="env-test")
        with pipeline_run(config, "env-demo", profile="demo", root=params_store.parent) as parent:
            mlflow.log_metric("miou", 0.25)
        runs = MlflowClient(url).search_runs([MlflowClient(url).get_experiment_by_name("env-test").experiment_id])
        assert [run.info.run_id for run in runs] == [parent.info.run_id]
        assert runs[0].data.metrics == {"miou": 0.25}
    assert not params_store.exists()  # nothing went to the params' SQLite store


def test_queued_metrics_are_written_before_the_stage_run_ends(sqlite_tracking: str, tmp_path: Path) -> None:
    with pipeline_run(TrackingConfig(tracking_uri=sqlite_tracking, experiment_name="async"), "p", root=tmp_path):
        with stage_run("train/full/fold0_shot1") as stage:
            log = metric_logger("train")
            for step in range(1, 31):
                log({"loss": 1.0 / step}, step)  # returns before the store has the point
        history = MlflowClient(sqlite_tracking).get_metric_history(stage.info.run_id, "train/loss")
    assert sorted(point.step for point in history) == list(range(1, 31))
    assert {point.step: point.value for point in history}[4] == pytest.approx(0.25)
