"""Registry and alias rule against SQLite, then the whole tracking path against a real ``mlflow server``
whose artifacts go to moto's S3."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import boto3
import mlflow
import pytest
from mlflow import MlflowClient

from benchmarks.servers import free_port, running
from components.mlflow_model import log_fsdino_model
from components.register import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT_TAG,
    MIOU_TAG,
    champion_miou,
    register_and_promote,
    running_experiment,
    should_promote,
    write_registration,
)
from components.tracking import TrackingConfig, log_artifacts_if_exist, metric_logger, pipeline_run, stage_run
from fsdino.errors import InputError
from tests.components.mlflow_fixtures import (
    isolated_mlflow_state,
    migrated_store,
    moto_endpoint_fixture,  # noqa: F401  (the moto_endpoint fixture)
    sqlite_tracking_fixture,  # noqa: F401  (the sqlite_tracking fixture)
    subprocess_env,
    tiny_checkpoint_fixture,  # noqa: F401  (the tiny_checkpoint fixture)
)

NAME = "fsdino"


@pytest.mark.parametrize(
    ("challenger", "champion", "expected"),
    [
        (0.50, None, True),  # no champion yet
        (0.51, 0.50, True),
        (0.50, 0.50, False),  # a tie keeps the champion
        (0.49, 0.50, False),
        (0.0, None, True),
        (math.nan, None, False),  # NaN never promotes
        (math.nan, 0.10, False),
        (0.90, math.nan, False),  # nor over an unreadable champion record
        (math.inf, 0.10, False),
    ],
)
def test_should_promote(challenger: float, champion: float | None, expected: bool) -> None:
    assert should_promote(challenger, champion) is expected


def _stub_model_uri() -> str:
    """A run holding a ``model/`` folder: the registry only records where a version comes from."""
    with mlflow.start_run() as run:
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    return f"runs:/{run.info.run_id}/model"


def test_first_becomes_champion_worse_and_equal_stay_challengers_better_is_promoted(
    sqlite_tracking: str, tmp_path: Path
) -> None:
    client = MlflowClient(sqlite_tracking)
    first_uri = _stub_model_uri()
    first = register_and_promote(first_uri, NAME, 0.50, client)
    assert first["version"] == 1 and first["promoted"] is True
    assert first["aliases"] == [CHALLENGER, CHAMPION]
    assert first["run_id"] == first_uri.split("/")[1] and first["mean_miou"] == 0.5

    worse = register_and_promote(_stub_model_uri(), NAME, 0.40, client)
    assert (worse["version"], worse["promoted"], worse["aliases"]) == (2, False, [CHALLENGER])
    assert int(client.get_model_version_by_alias(NAME, CHAMPION).version) == 1
    assert client.get_model_version(NAME, "2").tags[MIOU_TAG] == "0.4"

    equal = register_and_promote(_stub_model_uri(), NAME, 0.50, client)
    assert (equal["version"], equal["promoted"], equal["aliases"]) == (3, False, [CHALLENGER])
    assert int(client.get_model_version_by_alias(NAME, CHAMPION).version) == 1  # a tie does not promote

    better = register_and_promote(_stub_model_uri(), NAME, 0.51, client)
    assert (better["version"], better["promoted"], better["aliases"]) == (4, True, [CHALLENGER, CHAMPION])
    assert client.get_model_version(NAME, "1").aliases == []
    assert champion_miou(client, NAME) == 0.51

    path = tmp_path / "outputs" / "register" / "model.json"
    write_registration(better, path)
    assert json.loads(path.read_text()) == better
    assert set(better) == {"name", "version", "aliases", "run_id", "mean_miou", "promoted", "experiment"}
    assert [p.name for p in path.parent.iterdir()] == ["model.json"]  # no temporary file left


def test_an_experiment_registers_without_moving_any_alias(sqlite_tracking: str) -> None:
    client = MlflowClient(sqlite_tracking)
    register_and_promote(_stub_model_uri(), NAME, 0.50, client)
    result = register_and_promote(_stub_model_uri(), NAME, 0.99, client, experiment="sharp-lamb")
    assert (result["version"], result["promoted"], result["aliases"]) == (2, False, [])
    assert result["experiment"] == "sharp-lamb"
    assert client.get_model_version(NAME, "2").tags[EXPERIMENT_TAG] == "sharp-lamb"
    assert {alias: int(v) for alias, v in client.get_registered_model(NAME).aliases.items()} == {
        CHAMPION: 1,
        CHALLENGER: 1,
    }


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),  # dvc repro, the Prefect flow
        ({"DVC_EXP_NAME": "sharp-lamb", "DVC_EXP_BASELINE_REV": "f" * 40}, "sharp-lamb"),
        ({"DVC_EXP_BASELINE_REV": "f" * 40}, "f" * 40),
        ({"DVC_EXP_NAME": " "}, None),
    ],
)
def test_running_experiment_reads_what_dvc_sets(environ: dict[str, str], expected: str | None) -> None:
    assert running_experiment(environ) == expected


def test_unreadable_champion_score_blocks_promotion(sqlite_tracking: str) -> None:
    client = MlflowClient(sqlite_tracking)
    assert champion_miou(client, NAME) is None
    register_and_promote(_stub_model_uri(), NAME, 0.5, client)
    client.set_model_version_tag(NAME, "1", MIOU_TAG, "not a number")
    result = register_and_promote(_stub_model_uri(), NAME, 0.9, client)
    assert result["promoted"] is False and math.isnan(champion_miou(client, NAME))


def test_unsupported_model_uri_is_an_input_error(sqlite_tracking: str) -> None:
    with pytest.raises(InputError, match="expected models:/<model_id>"):
        register_and_promote(f"models:/{NAME}@{CHAMPION}", NAME, 0.5, MlflowClient(sqlite_tracking))


@pytest.mark.slow
def test_mlflow_server_with_s3_artifacts(
    moto_endpoint: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parent + nested runs, metrics, an artifact, the FS-DINO pyfunc model, register + promote, all
    through ``mlflow server``; artifacts must land in the bucket and the alias must resolve."""
    bucket = "mlflow-test"
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **_boto_credentials(credentials))
    s3.create_bucket(Bucket=bucket)
    database = migrated_store(tmp_path_factory, tmp_path / "server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{database}",
        "--artifacts-destination", f"s3://{bucket}/mlartifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = subprocess_env(MLFLOW_S3_ENDPOINT_URL=moto_endpoint, **credentials)
    url = f"http://127.0.0.1:{port}"
    # The client never talks to S3 itself (the server proxies artifacts): no AWS variables on this side.
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)

    report = tmp_path / "metrics.json"
    report.write_text('{"miou": 0.5}')
    with running(command, env, f"{url}/health", tmp_path / "server.log"), isolated_mlflow_state():
        config = TrackingConfig(tracking_uri=url, experiment_name="server-test")
        with pipeline_run(config, "server-demo", profile="demo", root=tmp_path) as parent:
            with stage_run("train/ba_svp_pcs/fold0_shot1", params={"epochs": 1}) as child:
                metric_logger("train")({"loss": 0.5}, 0)
                log_artifacts_if_exist([report], "evaluate")
            info = log_fsdino_model(tiny_checkpoint)
        result = register_and_promote(info.model_uri, config.registered_model_name, 0.42, MlflowClient(url))

        client = MlflowClient(url)
        assert client.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert client.get_metric_history(child.info.run_id, "train/loss")[0].value == 0.5
        assert result["promoted"] is True and result["run_id"] == parent.info.run_id
        champion = mlflow.models.get_model_info(f"models:/{NAME}@{CHAMPION}")
        assert champion.model_uuid == info.model_uuid
        downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@{CHAMPION}", dst_path=tmp_path / "dl"))
        assert (downloaded / "artifacts" / tiny_checkpoint.name).read_bytes() == tiny_checkpoint.read_bytes()

    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = {item["Key"] for page in pages for item in page.get("Contents", [])}
    assert any(key.endswith(f"{child.info.run_id}/artifacts/evaluate/metrics.json") for key in keys), sorted(keys)
    assert any(key.endswith(f"{info.model_id}/artifacts/MLmodel") for key in keys), sorted(keys)
    assert any(key.endswith(f"artifacts/artifacts/{tiny_checkpoint.name}") for key in keys), sorted(keys)


def _boto_credentials(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
    }
