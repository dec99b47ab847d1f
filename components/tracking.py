"""MLflow tracking for the pipeline: one parent run per pipeline run (tagged with the git commit, the
profile and the ``dvc.lock`` output hashes), nested runs per distillation stage and per fold × shot, and
per-epoch metrics (layout: ``docs/mlflow.md``).

Separate processes (DVC stages, torchrun ranks, Prefect tasks) join the same parent run through a run id
kept in an environment variable or a file that the caller names. Nothing here knows about models.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.fluent import ActiveRun

from components.params import load_yaml
from components.tracking_config import PROJECT_ROOT, TrackingConfig, resolve_tracking_uri
from fsdino.errors import InputError
from fsdino.io.atomic import write_text_atomic

__all__ = ["PROJECT_ROOT", "RUN_ID_ENV", "TRACKING_URI_ENV", "TrackingConfig", "resolve_tracking_uri", "tracking_uri"]

logger = logging.getLogger(__name__)

#: Environment variable through which an orchestrator hands the parent run id to child processes.
RUN_ID_ENV = "FSDINO_MLFLOW_RUN_ID"
#: Tags of a nested run: the DVC stage it stands for, and what the reproduction did with it.
STAGE_TAG, OUTCOME_TAG = "fsdino.stage", "fsdino.outcome"

_BAD_KEY_CHARACTERS = re.compile(r"[^/\w.\- ]")

MetricCallback = Callable[[Mapping[str, float], int], None]


#: MLflow's own variable for the tracking server; when a user or a deployment sets it, it wins over params.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
_exported: set[str] = set()  # values this process passed to mlflow.set_tracking_uri (which exports them)


def environment_tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI`` as the user, the deployment or the orchestrator set it; ``None`` when unset,
    empty, or only the value this process itself configured (``mlflow.set_tracking_uri`` exports its argument
    to the environment, so a second :func:`configure` in one process must not read its predecessor back)."""
    value = os.environ.get(TRACKING_URI_ENV, "").strip()
    return value if value and value not in _exported else None


def tracking_uri(config: TrackingConfig, root: Path = PROJECT_ROOT) -> str:
    """The tracking URI in effect: ``MLFLOW_TRACKING_URI`` when set, else ``tracking.tracking_uri`` (default
    ``sqlite:///mlflow.db`` in ``root``); relative SQLite paths are resolved against ``root``."""
    return resolve_tracking_uri(environment_tracking_uri() or config.tracking_uri, root)


def configure(config: TrackingConfig, root: Path = PROJECT_ROOT) -> str:
    """Point MLflow at the tracking URI in effect (:func:`tracking_uri`) and ``config``'s experiment
    (process-wide); returns the experiment id."""
    uri = tracking_uri(config, root)
    mlflow.set_tracking_uri(uri)
    _exported.add(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.experiment_name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                config.experiment_name, artifact_location=config.resolved_artifact_location(root, uri)
            )
        except MlflowException:  # another process created it in between
            experiment = client.get_experiment_by_name(config.experiment_name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# --------------------------------------------------------------------------------------------- tags


def sanitize_key(key: str) -> str:
    """A string MLflow accepts as a tag, param or metric name (bad characters become ``_``)."""
    return _BAD_KEY_CHARACTERS.sub("_", key).lstrip("/")[:250]


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """``{"git.commit", "git.dirty"}`` of the checkout at ``root``; empty without git or a repository."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def dvc_stage_output_hashes(lock_path: Path) -> dict[str, dict[str, str]]:
    """``{stage: {output path: md5}}`` as ``dvc.lock`` records them (``….dir`` for directories).

    Returns an empty mapping when the file does not exist; a malformed file is an :class:`InputError`.
    """
    if not lock_path.is_file():
        return {}
    try:
        lock = load_yaml(lock_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{lock_path}: not valid YAML ({error.__class__.__name__})") from error
    stages = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        return {}
    return {
        str(name): {
            str(out["path"]): str(out["md5"])
            for out in (stage or {}).get("outs") or []
            if isinstance(out, dict) and "path" in out and "md5" in out
        }
        for name, stage in stages.items()
    }


def dvc_output_hashes(lock_path: Path) -> dict[str, str]:
    """Map every output path recorded in ``dvc.lock`` to its md5 (``….dir`` for directories).

    Returns an empty mapping when the file does not exist; a malformed file is an :class:`InputError`.
    """
    return {path: md5 for outputs in dvc_stage_output_hashes(lock_path).values() for path, md5 in outputs.items()}


def pipeline_tags(profile: str | None = None, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Tags for a parent run: git state, ``fsdino.profile`` and ``dvc.<out path>`` = md5 per DVC output."""
    tags = git_state(root)
    if profile is not None:
        tags["fsdino.profile"] = profile
    for path, md5 in dvc_output_hashes(root / "dvc.lock").items():
        tags[sanitize_key(f"dvc.{path}")] = md5
    return tags


def set_tags(tags: Mapping[str, str], run_id: str | None = None) -> None:
    """Set many tags on ``run_id`` (default: the active run) in batches MLflow accepts."""
    run_id = run_id or _active_run_id()
    run_tags = [RunTag(sanitize_key(key), str(value)) for key, value in tags.items()]
    MlflowClient().log_batch(run_id, tags=run_tags)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"image_size": 224}}`` → ``{"model.image_size": "224"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        else:
            flat[sanitize_key(name)] = str(value)
    return flat


# --------------------------------------------------------------------------------------------- runs


@contextlib.contextmanager
def pipeline_run(
    config: TrackingConfig,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    *,
    profile: str | None = None,
    params: Mapping[str, Any] | None = None,
    run_id_env: str | None = RUN_ID_ENV,
    run_id_file: Path | None = None,
    root: Path = PROJECT_ROOT,
) -> Iterator[ActiveRun]:
    """Start the pipeline's parent run, or resume it, and make it the active run.

    The run id is looked up first in the environment variable ``run_id_env`` (an orchestrator's explicit
    hand-over: an unknown id is an :class:`InputError`), then in ``run_id_file`` (a stale id, e.g. after
    the database was wiped, starts a fresh run). A new run's id is written to ``run_id_file``. Tags from
    :func:`pipeline_tags` and ``tags`` are (re)set on every entry, so ``dvc.*`` follows ``dvc.lock``;
    ``params`` (flattened) are logged only when the run is new, as MLflow params are write-once.
    """
    experiment_id = configure(config, root)
    client = MlflowClient()
    run_id = _stored_run_id(client, run_id_env, run_id_file)
    if run_id is not None:
        active = mlflow.start_run(run_id=run_id)
    else:
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
    with active:
        if run_id is None and run_id_file is not None:
            write_text_atomic(run_id_file, active.info.run_id + "\n")
        set_tags({**pipeline_tags(profile, root), **(tags or {})})
        if params and run_id is None:
            mlflow.log_params(flatten_params(params))
        try:
            yield active
        finally:
            mlflow.flush_async_logging()


def _stored_run_id(client: MlflowClient, run_id_env: str | None, run_id_file: Path | None) -> str | None:
    from_env = os.environ.get(run_id_env, "").strip() if run_id_env else ""
    if from_env:
        if not _run_exists(client, from_env):
            raise InputError(f"{run_id_env}={from_env}: no such MLflow run at {mlflow.get_tracking_uri()}")
        return from_env
    if run_id_file is not None and run_id_file.is_file():
        from_file = run_id_file.read_text().strip()
        if from_file and _run_exists(client, from_file):
            return from_file
        logger.warning("%s: run %r not found in the tracking store; starting a new parent run", run_id_file, from_file)
    return None


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


@contextlib.contextmanager
def stage_run(
    name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
) -> Iterator[ActiveRun]:
    """A nested run under the active run (one per distillation stage, per fold × shot, …).

    ``params`` may be nested mappings (flattened to ``a.b`` keys); ``fsdino.stage`` = ``name`` is tagged.
    """
    if mlflow.active_run() is None:
        logger.warning("stage_run(%r) without an active parent run: it becomes a top-level run", name)
    with mlflow.start_run(run_name=name, nested=True, tags={STAGE_TAG: name, **(tags or {})}) as run:
        if params:
            mlflow.log_params(flatten_params(params))
        try:
            yield run
        finally:
            mlflow.flush_async_logging()  # the run ends only after its queued metrics are written


# ------------------------------------------------------------------------------------ metrics, files


def metric_logger(prefix: str = "") -> MetricCallback:
    """A ``(metrics, step) -> None`` callback for training loops: logs ``<prefix>/<name>`` to the active run,
    and does nothing when there is none (so the loops run the same with tracking off).

    The call returns without waiting for the store (MLflow's asynchronous logging: one queue, batched
    writes); :func:`stage_run` and :func:`pipeline_run` flush the queue before their run ends. The loops
    call it once per ``loop.log_every`` steps with the window's means, and once per epoch."""

    def log(metrics: Mapping[str, float], step: int) -> None:
        if mlflow.active_run() is None:
            return
        named = {sanitize_key(f"{prefix}/{key}" if prefix else key): float(value) for key, value in metrics.items()}
        mlflow.log_metrics(named, step=int(step), synchronous=False)

    return log


def log_epoch_metrics(
    history_rows: Iterable[Mapping[str, Any]] | Path | str,
    step_key: str = "epoch",
    *,
    keys: Sequence[str] | None = None,
    prefix: str = "",
    run_id: str | None = None,
) -> int:
    """Log a training history (rows or a ``history.csv``) as metrics with ``step = row[step_key]``.

    Every other column whose value parses as a finite number is logged (restricted to ``keys`` when
    given); empty and non-numeric cells are skipped. Returns the number of metric points logged.
    """
    if isinstance(history_rows, str | Path):
        with open(history_rows, newline="") as handle:
            history_rows = list(csv.DictReader(handle))
    timestamp = int(time.time() * 1000)
    points: list[Metric] = []
    for row in history_rows:
        if step_key not in row:
            raise InputError(f"history row has no {step_key!r} column: {sorted(row)}")
        step = int(float(row[step_key]))
        for key, raw in row.items():
            value = _as_number(raw)
            if key == step_key or value is None or (keys is not None and key not in keys):
                continue
            name = sanitize_key(f"{prefix}/{key}" if prefix else key)
            points.append(Metric(name, value, timestamp, step))
    if points:
        MlflowClient().log_batch(run_id or _active_run_id(), metrics=points)
    return len(points)


def log_artifacts_if_exist(paths: Iterable[Path | str], artifact_path: str | None = None) -> list[Path]:
    """Log each existing file or directory (as ``<artifact_path>/<name>``); missing ones are skipped."""
    logged: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            mlflow.log_artifact(str(path), artifact_path)
        elif path.is_dir():
            subpath = f"{artifact_path}/{path.name}" if artifact_path else path.name
            mlflow.log_artifacts(str(path), subpath)
        else:
            continue
        logged.append(path)
    return logged


def _as_number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call inside pipeline_run()/stage_run() or pass run_id")
    return run.info.run_id
