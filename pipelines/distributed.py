"""The ``distributed`` flow: one reproduction spread over the machines of a work pool, as deployments.

    python -m pipelines.distributed --commit "$(git rev-parse origin/main)"   # with PREFECT_API_URL set

It runs the ``fsdino-upstream`` deployment (staging, distillation, features) and waits for it, then every
fold deployment side by side (each a flow run that any free worker of the pool takes), then
``fsdino-report`` (report and registration). Each child is a flow run of ``reproduce`` that restores from
the DVC remote's run-cache what another machine already pushed, so a stage runs once across machines.

Every child gets, through its job variables' ``env``:

- ``FSDINO_COMMIT``: the exact commit its worker checks the workspace out at (the pull step of
  ``infra/prefect.yaml``), so a push to ``main`` during the run cannot mix two versions of the code;
- ``FSDINO_MLFLOW_RUN_ID`` and ``MLFLOW_TRACKING_URI``: the one MLflow parent run this flow opens, which
  every step of every machine joins (``components.tracking.parent_run``), when a tracking server is given.

A child that does not end ``Completed`` (failed, or ``Crashed``: its machine died and the zombie
automation of :mod:`pipelines.automations` marked it so) is run again, as a new flow run, up to
``retries`` times; a worker that lands on the same workspace resumes the interrupted step from its
checkpoint in ``outputs/.work/`` (docs/orchestration.md says what happens on another machine).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

FLOW = "fsdino-reproduce"  # the flow every deployment of infra/prefect.yaml runs
UPSTREAM = f"{FLOW}/fsdino-upstream"
FOLDS = [f"{FLOW}/fsdino-fold-{fold}" for fold in range(4)]
REPORT = f"{FLOW}/fsdino-report"
COMMIT_ENV = "FSDINO_COMMIT"


class ChildRunError(RuntimeError):
    """A deployment's flow run ended in a state other than ``Completed``."""


@task(cache_policy=NO_CACHE)
def run_child(deployment: str, env: Mapping[str, str], poll_interval: float) -> str:
    """Run ``deployment`` once more and wait for it; returns the child flow run's name.

    Each attempt (the first and every retry of this task) is a new flow run: the idempotency key names the
    attempt, so a retry after a crash does not get the crashed run back.
    """
    context = TaskRunContext.get()
    attempt = context.task_run.run_count if context else 1
    key = f"{context.task_run.id}-{attempt}" if context else None
    child = run_deployment(
        deployment, job_variables={"env": dict(env)}, idempotency_key=key, poll_interval=poll_interval, timeout=None
    )
    state = child.state
    get_run_logger().info("%s: flow run %s ended %s", deployment, child.name, state.name if state else "?")
    if state is None or not state.is_completed():
        raise ChildRunError(f"{deployment}: flow run {child.name} ended {state.name if state else 'without a state'}")
    return child.name


def resolve_commit(ref: str) -> str:
    """``ref`` (a sha, a branch such as ``origin/main``, a tag) as the full sha the current checkout knows it
    by, so that every child checks out the same commit even when the branch moves during the run."""
    ref = ref.strip()
    if not ref:
        raise ValueError("commit: expected the git commit the workers check out, got an empty string")
    verify = ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]
    found = subprocess.run(verify, capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    if re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref  # a full sha this folder does not have (not a checkout, or not fetched): the workers will
    raise ValueError(f"commit: {ref!r} is not a commit of the checkout in {Path.cwd()} (expected a full sha there)")


def profile_folds(commit: str) -> list[int] | None:
    """``train.folds`` of ``params.yaml`` at ``commit`` in the checkout this flow runs in; ``None`` when the
    file cannot be read there (not a checkout, or the commit not fetched)."""
    import yaml

    shown = subprocess.run(["git", "show", f"{commit}:params.yaml"], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    folds = ((yaml.safe_load(shown.stdout) or {}).get("train") or {}).get("folds")
    if not isinstance(folds, list) or not all(isinstance(fold, int) for fold in folds):
        raise ValueError(f"params.yaml at {commit[:12]}: train.folds: expected a list of fold numbers, got {folds!r}")
    return folds


def fold_deployments(folds: Sequence[int]) -> list[str]:
    """The fold deployments of infra/prefect.yaml for ``folds`` (``fsdino-fold-<f>``, f in 0..3)."""
    unknown = [fold for fold in folds if not 0 <= fold < len(FOLDS)]
    if unknown:
        raise ValueError(f"train.folds: no fold deployment for {unknown} (infra/prefect.yaml has folds 0-3)")
    return [FOLDS[fold] for fold in folds]


def open_parent_run(tracking_uri: str, experiment: str, commit: str, flow_run: str) -> str:
    """Create the MLflow parent run every step joins; returns its id."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else mlflow.create_experiment(experiment)
    tags = {"fsdino.commit": commit, "fsdino.orchestrator": "prefect", "prefect.flow_run": flow_run}
    run = MlflowClient(tracking_uri).create_run(experiment_id, run_name=f"distributed-{flow_run}", tags=tags)
    return run.info.run_id


def close_parent_run(tracking_uri: str, run_id: str, status: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


def child_env(commit: str, tracking_uri: str | None, run_id: str | None) -> dict[str, str]:
    """The environment each child flow run gets on its worker (merged over the worker's own)."""
    from components.tracking import RUN_ID_ENV, TRACKING_URI_ENV

    env = {COMMIT_ENV: commit}
    if tracking_uri and run_id:
        env |= {TRACKING_URI_ENV: tracking_uri, RUN_ID_ENV: run_id}
    return env


@flow(name="fsdino-distributed", task_runner=ThreadPoolTaskRunner())
def distributed(
    commit: str,
    upstream: str = UPSTREAM,
    folds: list[str] | None = None,
    report: str = REPORT,
    tracking_uri: str | None = None,
    experiment: str = "fsdino",
    retries: int = 2,
    retry_delay_seconds: float = 60.0,
    poll_interval: float = 10.0,
) -> dict[str, str]:
    """Upstream, then the folds side by side, then the report; each a deployment run on the work pool.

    Args:
        commit: the git commit every child checks out (``FSDINO_COMMIT``): a full sha, or a ref such as
            ``origin/main`` that the checkout this flow runs in resolves to one when the run starts.
        upstream, folds, report: deployment names (``flow/deployment``); ``folds`` defaults to the fold
            deployments of ``train.folds`` in ``params.yaml`` at ``commit`` (all four if it cannot be read).
        tracking_uri: the MLflow tracking server every machine reaches; defaults to ``MLFLOW_TRACKING_URI``.
            Without one, no parent run is handed over and each machine opens its own.
        experiment: the MLflow experiment of the parent run.
        retries, retry_delay_seconds: per child, for any end other than ``Completed``.
        poll_interval: seconds between looks at a running child's state.

    Returns:
        ``{deployment: child flow run name}`` of the attempt that completed, upstream first.
    """
    logger = get_run_logger()
    commit = resolve_commit(commit)
    logger.info("every child checks out %s", commit)
    if folds is None:  # what the profile trains: a 2-fold profile must not run fold 2 and 3 (they would fail)
        trained = profile_folds(commit)
        folds = fold_deployments(trained) if trained is not None else FOLDS
        logger.info("fold deployments: %s%s", ", ".join(folds), "" if trained is not None else " (params.yaml unread)")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    from prefect.runtime import flow_run

    run_id = open_parent_run(uri, experiment, commit, flow_run.name) if uri else None
    if run_id is None:
        logger.warning("no MLflow tracking server given: each machine records its stages in its own parent run")
    env = child_env(commit, uri, run_id)
    child = run_child.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    done: dict[str, str] = {}
    status = "FAILED"
    try:
        done[upstream] = child.with_options(task_run_name=upstream).submit(upstream, env, poll_interval).result()
        futures = {name: child.with_options(task_run_name=name).submit(name, env, poll_interval) for name in folds}
        wait(list(futures.values()))
        for name, future in futures.items():  # every fold ran to its end before the first failure is raised
            done[name] = future.result()
        done[report] = child.with_options(task_run_name=report).submit(report, env, poll_interval).result()
        status = "FINISHED"
    finally:
        if uri and run_id:
            close_parent_run(uri, run_id, status)
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--commit", required=True, help="the git commit every worker checks out")
    parser.add_argument("--upstream", default=UPSTREAM, help="deployment name (flow/deployment)")
    parser.add_argument(
        "--folds", nargs="+", help="fold deployment names, run side by side (default: those of train.folds)"
    )
    parser.add_argument("--report", default=REPORT, help="deployment name (flow/deployment)")
    parser.add_argument("--tracking-uri", help="MLflow tracking server (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", default="fsdino")
    parser.add_argument("--retries", type=int, default=2, help="new flow runs per child after a failure or crash")
    parser.add_argument("--retry-delay", type=float, default=60.0, help="seconds before a child is run again")
    parser.add_argument("--poll-interval", type=float, default=10.0, help="seconds between looks at a child")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        done: dict[str, Any] = distributed(
            commit=args.commit, upstream=args.upstream, folds=args.folds, report=args.report,
            tracking_uri=args.tracking_uri, experiment=args.experiment, retries=args.retries,
            retry_delay_seconds=args.retry_delay, poll_interval=args.poll_interval,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, child in done.items():
        print(f"{name:<40} {child}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
