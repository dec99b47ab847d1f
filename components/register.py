"""Registering a trained model and deciding whether it becomes the champion.

Aliases, not the deprecated stages: every version the main reproduction registers gets ``challenger``;
``champion`` moves to it only when its mean mIoU is above the current champion's (:func:`should_promote`;
a tie keeps the champion). The version's ``mean_miou`` tag is what later comparisons read.

A ``dvc exp run`` is a throwaway: DVC names it in ``DVC_EXP_NAME`` / ``DVC_EXP_BASELINE_REV`` while its
stages run (:func:`running_experiment`). Its version is registered and tagged ``fsdino.experiment``, but
no alias moves, unless ``registry.promote_experiments`` is set (the explicit flag, e.g.
``dvc exp run -S registry.promote_experiments=true``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from fsdino.errors import InputError
from fsdino.io.atomic import write_text_atomic

if TYPE_CHECKING:
    from components.config import Params

CHAMPION = "champion"
CHALLENGER = "challenger"
MIOU_TAG = "mean_miou"
EXPERIMENT_TAG = "fsdino.experiment"
EXPERIMENT_ENV = ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")  # set by DVC for the stages of a `dvc exp run`


def should_promote(challenger_miou: float, champion_miou: float | None) -> bool:
    """Promote when there is no champion, or the challenger's mean mIoU is above the champion's.

    A tie keeps the champion (a re-run of the same model must not churn the alias that serving reads). A
    NaN or infinite challenger score never promotes; neither does a NaN champion score (an unreadable
    record is for a person to sort out, not to overwrite), which is what ``>`` gives for NaN.
    """
    if not math.isfinite(challenger_miou):
        return False
    if champion_miou is None:
        return True
    return challenger_miou > champion_miou


def running_experiment(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``dvc exp run`` this process is a stage of (its name, else its baseline commit); ``None`` for
    ``dvc repro`` and the Prefect flow."""
    environ = os.environ if environ is None else environ
    for key in EXPERIMENT_ENV:
        if environ.get(key, "").strip():
            return environ[key].strip()
    return None


def register_and_promote(
    model_uri: str, name: str, mean_miou: float, client: MlflowClient, *, experiment: str | None = None
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version of ``name`` and tag its ``mean_miou``; alias it ``challenger``
    and move ``champion`` to it when :func:`should_promote` says so.

    With ``experiment`` (a ``dvc exp run`` that may not promote) the version is tagged
    ``fsdino.experiment`` = its name and no alias moves.

    Returns ``{"name", "version", "aliases", "run_id", "mean_miou", "promoted", "experiment"}``
    (``outputs/register/model.json``).
    """
    _ensure_registered_model(client, name)
    version = _create_version(client, model_uri, name)
    client.set_model_version_tag(name, version.version, MIOU_TAG, repr(float(mean_miou)))
    promoted = False
    if experiment is not None:
        client.set_model_version_tag(name, version.version, EXPERIMENT_TAG, experiment)
    else:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        promoted = should_promote(float(mean_miou), champion_miou(client, name))
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version.version)
    final = client.get_model_version(name, version.version)
    return {
        "name": name,
        "version": int(final.version),
        "aliases": sorted(final.aliases),
        "run_id": final.run_id,
        "mean_miou": float(mean_miou),
        "promoted": promoted,
        "experiment": experiment,
    }


def champion_miou(client: MlflowClient, name: str) -> float | None:
    """The ``mean_miou`` tag of the version aliased ``champion``; ``None`` without one (or without the model),
    NaN if the tag is missing or unreadable."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    # Read the alias map: stores disagree on the error code of get_model_version_by_alias for a missing alias.
    version = registered.aliases.get(CHAMPION)
    if version is None:
        return None
    champion = client.get_model_version(name, str(version))
    try:
        return float(champion.tags.get(MIOU_TAG, "nan"))
    except ValueError:
        return math.nan


def write_registration(result: dict[str, Any], path: Path | str) -> None:
    """Write the registration record as JSON, atomically (temporary file + rename)."""
    write_text_atomic(path, json.dumps(result, indent=2, sort_keys=True) + "\n")


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _create_version(client: MlflowClient, model_uri: str, name: str) -> ModelVersion:
    """Create the version, linked to its logged model and run, and wait until the registry reports READY."""
    run_id, model_id = _origin(client, model_uri)
    return client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id)


def _origin(client: MlflowClient, model_uri: str) -> tuple[str | None, str | None]:
    """(run id, logged model id) of a ``models:/<model_id>`` or ``runs:/<run_id>/<path>`` URI."""
    scheme, _, rest = model_uri.partition(":/")
    if scheme == "runs" and rest.strip("/"):
        return rest.strip("/").split("/")[0], None
    if scheme == "models" and rest and not any(mark in rest for mark in "/@"):
        logged_model = client.get_logged_model(rest)
        return logged_model.source_run_id, logged_model.model_id
    raise InputError(f"{model_uri}: expected models:/<model_id> (a logged model) or runs:/<run_id>/<path>")


# ------------------------------------------------------------------------------- the pipeline step


def fold_scores(params: Params) -> dict[int, float]:
    """mIoU of the registered variant and shot on every trained fold (from the evaluate steps)."""
    chosen = params.registry
    scores = {}
    for fold in params.train.folds:
        path = params.evaluate.run_dir(chosen.variant, fold, chosen.shot) / "metrics.json"
        if not path.is_file():
            raise InputError(f"{path}: missing (run the evaluate step of fold {fold} first)")
        scores[fold] = float(json.loads(path.read_text())["miou"])
    return scores


def run(params: Params, args: Any = None) -> dict[str, Any]:
    """Log the chosen checkpoint as an MLflow pyfunc, register it as ``challenger`` and promote it to
    ``champion`` when :func:`should_promote` says so; write ``outputs/register/model.json``. Inside a
    ``dvc exp run`` no alias moves unless ``registry.promote_experiments``."""
    from components.mlflow_model import log_fsdino_model

    if not params.tracking.enabled:
        raise InputError("register: tracking.enabled is false, but the model registry lives in MLflow")
    chosen = params.registry
    scores = fold_scores(params)
    mean_miou = sum(scores.values()) / len(scores)
    checkpoint = params.train.run_dir(chosen.variant, chosen.fold, chosen.shot) / "best.pt"
    info = log_fsdino_model(checkpoint, name="model")
    experiment = running_experiment()
    if experiment is not None and chosen.promote_experiments:
        print(f"register: experiment {experiment} may promote (registry.promote_experiments)")
        experiment = None
    elif experiment is not None:
        print(f"register: experiment {experiment}: registered without aliases (registry.promote_experiments: false)")
    result = register_and_promote(
        info.model_uri, params.tracking.registered_model_name, mean_miou, MlflowClient(), experiment=experiment
    )
    result.update(variant=chosen.variant, shot=chosen.shot, fold=chosen.fold, fold_miou=scores)
    write_registration(result, chosen.out)
    return {**result, "out_dir": str(chosen.out.parent)}


def main(argv: list[str] | None = None) -> int:
    from components.cli import params_main

    return params_main(run, argv, "Register the trained model in MLflow and promote it when it is not worse.")


if __name__ == "__main__":
    import sys

    sys.exit(main())
