"""The command-line shape shared by the pipeline steps that read the whole ``params.yaml``.

``python -m components.<step> [--params params.yaml] [step options]``: the step's summary is printed as
one JSON line on stdout; bad input ends with ``error: <one line>`` on stderr and exit code 2. Under
``torchrun`` only rank 0 tracks the step in MLflow and prints the summary; the other ranks just run it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.config import WORK_DIR, Params, load_params
from fsdino.errors import report_error


def params_main(
    run: Callable[[Params, argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    stage_name: Callable[[argparse.Namespace], str] | None = None,
) -> int:
    """Parse the step's arguments, load ``params.yaml``, run the step inside its MLflow runs, print the summary.

    ``stage_name`` names the step's nested MLflow run (e.g. ``train@full-0-1``, as DVC names the stage).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        name = stage_name(args) if stage_name is not None else Path(sys.argv[0]).stem
        summary = tracked(params, name, lambda: run(params, args))
    except Exception as error:
        return report_error(error)
    if is_main_process():
        print(json.dumps(summary, default=str))
    return 0


def is_main_process() -> bool:
    """False in the ranks other than 0 of a ``torchrun`` launch (``RANK`` set and not ``"0"``)."""
    return os.environ.get("RANK", "0") == "0"


def fingerprint(*parts: Any) -> str:
    """A stable digest of configuration values (pydantic models, dicts, strings)."""
    import hashlib

    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if hasattr(value, "model_dump") else value

    text = json.dumps([plain(part) for part in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_work_dir(path: Path, run_fingerprint: str) -> Path:
    """A folder for resumable training state, emptied when it belongs to another configuration.

    Only rank 0 of a ``torchrun`` launch prepares it: the other ranks return the path untouched (two ranks
    emptying one folder race). Call it before :func:`fsdino.training.runtime.runtime`, whose explicit barrier
    after the process group starts holds every rank until rank 0 is done, so no rank reads the folder before.
    """
    import shutil

    if not is_main_process():
        return path
    marker = path / "fingerprint.txt"
    if path.exists() and (not marker.is_file() or marker.read_text().strip() != run_fingerprint):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_fingerprint + "\n")
    return path


def copy_atomic(source: Path, destination: Path) -> None:
    import shutil

    from fsdino.io.atomic import atomic_path

    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)


def tracked(params: Params, stage: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``step`` inside the pipeline's parent MLflow run and a nested run named ``stage``.

    Every stage of one reproduction (same git commit, same parameters) joins the same parent run: its id
    is kept in ``outputs/.work/mlflow/<digest>.run_id`` (an orchestrator may hand one over in
    ``FSDINO_MLFLOW_RUN_ID`` instead). Numbers of the step's summary become metrics of the nested run and
    the small files of its ``out_dir`` its artifacts. With ``tracking.enabled: false``, and in the ranks
    other than 0 of a ``torchrun`` launch (which must not create or log to runs), it only runs ``step``.
    """
    if not params.tracking.enabled or not is_main_process():
        return step()
    import mlflow

    from components import tracking

    with parent_run(params), tracking.stage_run(stage, tags={tracking.OUTCOME_TAG: "ran"}):
        summary = step()
        numbers = {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if numbers:
            mlflow.log_metrics({tracking.sanitize_key(k): v for k, v in numbers.items()})
        out_dir = summary.get("out_dir")
        if out_dir:
            small = [p for p in Path(out_dir).rglob("*") if p.is_file() and p.suffix in ARTIFACT_SUFFIXES]
            tracking.log_artifacts_if_exist(small, artifact_path=stage.replace("@", "_"))
    return summary


ARTIFACT_SUFFIXES = frozenset({".json", ".csv", ".png", ".html"})


def parent_run(params: Params, root: Path | None = None):
    """The pipeline's parent MLflow run for this checkout and ``params``, started or resumed (a context
    manager, :func:`components.tracking.pipeline_run`): the one an orchestrator names in
    ``FSDINO_MLFLOW_RUN_ID``, else the one whose id is kept in ``outputs/.work/mlflow/<digest>.run_id``,
    the digest being of the git commit and the parameters (one parent per reproduction)."""
    from components import tracking

    root = Path.cwd() if root is None else root
    commit = tracking.git_state(root).get("git.commit", "")
    run_id_file = root / WORK_DIR / "mlflow" / f"{fingerprint(commit, params)}.run_id"
    return tracking.pipeline_run(
        params.tracking, run_name=f"reproduce-{params.profile}", profile=params.profile,
        params=params.model_dump(mode="json"), run_id_file=run_id_file, root=root,
    )  # fmt: skip


def step_logger(params: Params):
    """The training loops' per-step metrics sink: MLflow's active run, or ``None`` with tracking off."""
    if not params.tracking.enabled:
        return None
    from components.tracking import metric_logger

    return metric_logger()


def fold_step_arguments(parser: argparse.ArgumentParser) -> None:
    """``--variant --fold --shot``: the options of the per-fold steps (train, evaluate)."""
    parser.add_argument("--variant", required=True, choices=["ba_pcs", "ba_svp_pcs", "full"])
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--shot", type=int, required=True)


def fold_step_name(step: str) -> Callable[[argparse.Namespace], str]:
    """Names a per-fold step's MLflow run as DVC names the stage (``train@full-0-1``)."""
    return lambda args: f"{step}@{args.variant}-{args.fold}-{args.shot}"
