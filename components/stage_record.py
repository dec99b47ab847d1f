"""Record in the pipeline's parent MLflow run every stage of a reproduction that has no nested run there:
restored from DVC's run-cache (another machine ran them and pushed), up to date (an earlier reproduction
ran them), or run by a step that does not log to MLflow itself (``weights``, ``sa1b``, ``report``, …), with
the DVC hash of each output and the numbers of their metrics files. The parent run of every reproduction
then shows every stage and its metrics, wherever and whenever the stage ran.

    echo '{"distill_3": "restored from run-cache"}' | python -m components.stage_record --outcomes -
    python -m components.stage_record --all     # every stage in dvc.lock (after a plain `dvc repro`)

Run it after a reproduction (the Prefect flow is to call it at the end of each flow run: #18, in progress).
A stage that already has a nested run under the parent (it ran in this reproduction, or was recorded
before) is left alone: one nested run per stage and parent. Its nested run is named as DVC names the
stage and tagged ``fsdino.outcome`` (``ran``, ``restored from run-cache``, ``up to date``) and
``dvc.<output path>`` = that output's md5 in ``dvc.lock`` (layout: docs/mlflow.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.cli import is_main_process, load_params, parent_run, report_error
from components.config import Params
from fsdino.errors import InputError

RECORDABLE = ("ran", "restored from run-cache", "up to date")  # pipelines.reproduce's RAN, RESTORED, UP_TO_DATE
METRICS_FILE = "metrics.json"  # a stage folder's summary (distill, train, evaluate, crossdomain)


def numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a parsed JSON document, nested keys joined with ``/`` (booleans left out)."""
    found: dict[str, float] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            found |= numbers(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(data, int | float) and not isinstance(data, bool) and math.isfinite(data) and prefix:
        found[prefix] = float(data)
    return found


def stage_metrics(root: Path, outputs: Sequence[str]) -> dict[str, float]:
    """Numbers of the stage's JSON outputs and of ``metrics.json`` in its output folders."""
    found: dict[str, float] = {}
    for output in outputs:
        path = root / output
        candidate = path / METRICS_FILE if path.is_dir() else path
        if candidate.suffix != ".json" or not candidate.is_file():
            continue
        try:
            found |= numbers(json.loads(candidate.read_text()))
        except (OSError, ValueError) as error:
            raise InputError(f"{candidate}: not readable JSON ({error})") from error
    return found


def recorded_stages(client: Any, parent: Any) -> set[str]:
    """The ``fsdino.stage`` tags of the nested runs already under ``parent`` (an MLflow ``Run``)."""
    from components.tracking import STAGE_TAG

    stages: set[str] = set()
    token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            max_results=1000, page_token=token,
        )  # fmt: skip
        stages |= {run.data.tags[STAGE_TAG] for run in page if STAGE_TAG in run.data.tags}
        token = page.token
        if not token:
            return stages


def record(params: Params, outcomes: Mapping[str, str], root: Path) -> dict[str, list[str]]:
    """One nested run under the parent per stage of ``outcomes`` that has none yet.

    Returns ``{"recorded": [...], "present": [...]}`` (stages recorded now, stages that already had one).
    """
    import mlflow
    from mlflow import MlflowClient

    from components.tracking import OUTCOME_TAG, dvc_stage_output_hashes, sanitize_key, stage_run

    for stage, outcome in outcomes.items():
        if outcome not in RECORDABLE:
            raise InputError(f"outcomes[{stage!r}]: expected one of {', '.join(RECORDABLE)}, got {outcome!r}")
    hashes = dvc_stage_output_hashes(root / "dvc.lock")
    recorded, present = [], []
    with parent_run(params, root) as active:
        client = MlflowClient()
        already = recorded_stages(client, client.get_run(active.info.run_id))
        for stage, outcome in outcomes.items():
            if stage in already:
                present.append(stage)
                continue
            outputs = hashes.get(stage, {})
            tags = {OUTCOME_TAG: outcome, **{sanitize_key(f"dvc.{path}"): md5 for path, md5 in outputs.items()}}
            with stage_run(stage, tags=tags):
                metrics = stage_metrics(root, list(outputs))
                if metrics:
                    mlflow.log_metrics({sanitize_key(key): value for key, value in metrics.items()})
            recorded.append(stage)
    return {"recorded": recorded, "present": present}


def _outcomes(args: argparse.Namespace, root: Path) -> dict[str, str]:
    if args.all:
        from components.tracking import dvc_stage_output_hashes

        lock_path = root / "dvc.lock"
        if not lock_path.is_file():
            raise InputError(f"{lock_path}: missing (run dvc repro first)")
        return dict.fromkeys(dvc_stage_output_hashes(lock_path), "up to date")
    text = sys.stdin.read() if args.outcomes == "-" else Path(args.outcomes).read_text()
    try:
        outcomes = json.loads(text)
    except ValueError as error:
        raise InputError(f"--outcomes {args.outcomes}: not JSON ({error})") from error
    if not isinstance(outcomes, dict) or not all(isinstance(v, str) for v in outcomes.values()):
        raise InputError(f"--outcomes {args.outcomes}: expected a JSON object {{stage: outcome}}")
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--outcomes", help="JSON file {stage: outcome}, or - for standard input")
    which.add_argument("--all", action="store_true", help="every stage dvc.lock records, as 'up to date'")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        params = load_params(args.params)
        if not params.tracking.enabled or not is_main_process():
            print("stage_record: tracking.enabled is false; nothing recorded")
            return 0
        summary = record(params, _outcomes(args, root), root)
    except Exception as error:
        return report_error(error)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
