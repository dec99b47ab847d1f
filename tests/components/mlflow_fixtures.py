"""Shared MLflow test helpers: isolated MLflow globals, a migrated SQLite store copied per test, a tiny
FS-DINO checkpoint, moto's S3 server, and the environment of subprocess servers (started with
``benchmarks.servers.running``, which polls them until they answer).

Fixtures are defined as ``<name>_fixture`` with ``@pytest.fixture(name=<name>)``: import the
``…_fixture`` function into the test module and ask for ``<name>``.
Session-wide files are cached under pytest's base temp directory, so importing a session fixture into
several modules still builds it once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from moto.server import ThreadedMotoServer

from components.tracking import RUN_ID_ENV
from fsdino.checkpoints import save_checkpoint
from fsdino.config import EncoderConfig, ModelConfig
from fsdino.models.build import build_fsdino

TINY_SIZE = 70  # a 5×5 patch grid: fast on a CPU


def tiny_model_config(encoder_weights: str = "random") -> ModelConfig:
    return ModelConfig(
        variant="ba_svp_pcs",
        encoder=EncoderConfig(name="vit_small_patch14_dinov2", weights=encoder_weights),
        image_size=TINY_SIZE,
        sam_checkpoint=None,
    )


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _mlflow_variables() -> list[str]:
    return [name for name in os.environ if name.startswith("MLFLOW_") or name == RUN_ID_ENV]


@contextlib.contextmanager
def isolated_mlflow_state() -> Iterator[None]:
    """No ``MLFLOW_*`` variables in; none, and no tracking URI, experiment or active run, left behind.

    ``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` also export ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_EXPERIMENT_ID`` (for subprocesses), so the environment is restored by hand afterwards.
    """
    saved = {name: os.environ.pop(name) for name in _mlflow_variables()}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
            try:
                yield
            finally:
                while mlflow.active_run() is not None:
                    mlflow.end_run()
                mlflow.set_tracking_uri(None)
                mlflow.set_registry_uri(None)
    finally:
        for name in _mlflow_variables():
            del os.environ[name]
        os.environ.update(saved)


def _cached(tmp_path_factory: pytest.TempPathFactory, relative: str, build: Callable[[Path], None]) -> Path:
    """``build(path)`` once per session into ``<basetemp>/<relative>`` (written beside, then renamed)."""
    path = tmp_path_factory.getbasetemp() / relative
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        build(partial)
        partial.rename(path)
    return path


def _migrate(path: Path) -> None:
    store = SqlAlchemyStore(sqlite_uri(path), (path.parent / "template-artifacts").as_uri())
    store.engine.dispose()


def migrated_store(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Path:
    """A copy, in ``folder``, of an SQLite file whose MLflow schema was migrated once per session."""
    template = _cached(tmp_path_factory, "mlflow-template/mlflow.db", _migrate)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(template, folder / "mlflow.db"))


def use_store(database: Path, artifacts: Path, experiment: str = "tests") -> str:
    """Make ``database`` the tracking store, with an active experiment whose artifacts go to ``artifacts``."""
    uri = sqlite_uri(database)
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.MlflowClient(uri).create_experiment(experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    return uri


@pytest.fixture(name="sqlite_tracking")
def sqlite_tracking_fixture(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh SQLite tracking store in ``tmp_path`` (artifacts in ``tmp_path/mlruns``), isolated; yields its URI."""
    with isolated_mlflow_state():
        yield use_store(migrated_store(tmp_path_factory, tmp_path), tmp_path / "mlruns")


def _write_tiny_checkpoint(path: Path) -> None:
    config = tiny_model_config()
    torch.manual_seed(0)
    save_checkpoint(path, build_fsdino(config), config, metadata={"fold": 0, "shot": 1, "val_miou": 0.5})


@pytest.fixture(name="tiny_checkpoint", scope="session")
def tiny_checkpoint_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FS-DINO checkpoint of the compact variant with a random ViT-S/14 at 70 px (no training)."""
    return _cached(tmp_path_factory, "fsdino-tiny/tiny.pt", _write_tiny_checkpoint)


# ------------------------------------------------------------------------------------------ servers


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment without ``MLFLOW_*`` variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(extra)
    return env


@pytest.fixture(name="moto_endpoint", scope="module")
def moto_endpoint_fixture() -> Iterator[str]:
    """moto's S3 as a real HTTP endpoint on 127.0.0.1 (reachable from subprocesses)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
