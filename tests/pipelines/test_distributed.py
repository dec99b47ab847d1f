"""The ``distributed`` parent flow's pieces that need no server: the commit every child checks out, the
environment handed to the children, and the zombie-run automation (the whole flow runs for real in
tests/pipelines/test_multi_worker.py)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from components.tracking import RUN_ID_ENV, TRACKING_URI_ENV
from pipelines.automations import zombie_automation
from pipelines.distributed import COMMIT_ENV, FOLDS, child_env, fold_deployments, profile_folds, resolve_commit


def test_a_branch_is_resolved_to_the_sha_it_has_when_the_run_starts(tmp_path: Path, monkeypatch) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *author, "commit", "-q", "--allow-empty", "-m", "one"], cwd=tmp_path, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert resolve_commit("main") == sha and resolve_commit(f" {sha[:8]} ") == sha
    with pytest.raises(ValueError, match="'no-such-branch' is not a commit"):
        resolve_commit("no-such-branch")
    with pytest.raises(ValueError, match="empty string"):
        resolve_commit("  ")


def test_a_full_sha_passes_where_there_is_no_checkout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_commit("a" * 40) == "a" * 40
    with pytest.raises(ValueError, match="expected a full sha"):
        resolve_commit("origin/main")


def test_the_fold_deployments_follow_the_profile_at_the_commit(tmp_path: Path, monkeypatch) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("train:\n  folds: [0, 1]\n")
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "add", "params.yaml"], cwd=tmp_path, check=True)
    subprocess.run(["git", *author, "commit", "-q", "-m", "two folds"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  folds: [0, 1, 2, 3]\n")  # not committed: not the run's
    assert profile_folds(resolve_commit("main")) == [0, 1]
    assert fold_deployments([0, 1]) == FOLDS[:2] and fold_deployments([3]) == [FOLDS[3]]
    with pytest.raises(ValueError, match=r"no fold deployment for \[4\]"):
        fold_deployments([0, 4])
    assert profile_folds("b" * 40) is None  # a commit this checkout does not have


def test_children_get_the_commit_and_the_parent_run_only_with_a_tracking_server() -> None:
    assert child_env("c0ffee", None, None) == {COMMIT_ENV: "c0ffee"}
    env = child_env("c0ffee", "http://mlflow:5000", "run-1")
    assert env == {COMMIT_ENV: "c0ffee", TRACKING_URI_ENV: "http://mlflow:5000", RUN_ID_ENV: "run-1"}


def test_the_zombie_automation_crashes_a_run_whose_heartbeats_stop() -> None:
    automation = zombie_automation(90)
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.within == timedelta(seconds=90)
    assert trigger.after == {"prefect.flow-run.heartbeat"} and "prefect.flow-run.Completed" in trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    (action,) = automation.actions
    assert action.state.value == "CRASHED"
    with pytest.raises(ValueError, match="at least 30 s"):
        zombie_automation(10)
