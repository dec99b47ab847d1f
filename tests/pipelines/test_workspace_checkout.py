"""The deployments' pull step puts a worker's persistent checkout on the run's exact commit, whatever the
previous run left modified in tracked files (``git pull --ff-only`` stopped there)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def pull_step() -> dict:
    (step,) = [
        s for s in yaml.safe_load((ROOT / "infra/prefect.yaml").read_text())["pull"] if "run_shell_script" in str(s)
    ]
    return step["prefect.deployments.steps.run_shell_script"]


def run_pull(workspace: Path, commit: str | None) -> subprocess.CompletedProcess:
    """The step's script as Prefect runs it with ``shell: true`` (one shell command per line)."""
    step = pull_step()
    assert step["shell"] is True
    env = {k: v for k, v in os.environ.items() if k != "FSDINO_COMMIT"} | ({"FSDINO_COMMIT": commit} if commit else {})
    return subprocess.run(step["script"], shell=True, cwd=workspace, env=env, capture_output=True, text=True)


def test_a_dirty_workspace_is_put_on_the_runs_commit_or_on_origin_main(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    for name, value in (("user.email", "ci@example.org"), ("user.name", "ci")):
        git("config", name, value, cwd=origin)
    (origin / "dvc.lock").write_text("first\n")
    git("add", "dvc.lock", cwd=origin)
    git("commit", "-qm", "first", cwd=origin)
    first = git("rev-parse", "HEAD", cwd=origin)
    workspace = tmp_path / "workspace"
    git("clone", "-q", str(origin), str(workspace), cwd=tmp_path)
    (origin / "dvc.lock").write_text("second\n")
    git("commit", "-qam", "second", cwd=origin)
    second = git("rev-parse", "HEAD", cwd=origin)

    (workspace / "dvc.lock").write_text("what the last run committed\n")  # a tracked file the run changed
    (workspace / "outputs").mkdir()
    (workspace / "outputs" / "state.pt").write_text("a checkpoint")  # untracked: must survive
    assert subprocess.run(["git", "pull", "--ff-only", "-q"], cwd=workspace, capture_output=True).returncode != 0

    result = run_pull(workspace, first)
    assert result.returncode == 0, result.stderr
    assert git("rev-parse", "HEAD", cwd=workspace) == first and (workspace / "dvc.lock").read_text() == "first\n"
    assert (workspace / "outputs" / "state.pt").read_text() == "a checkpoint"

    (workspace / "dvc.lock").write_text("changed again\n")
    result = run_pull(workspace, None)  # no commit given: the newest origin/main
    assert result.returncode == 0, result.stderr
    assert git("rev-parse", "HEAD", cwd=workspace) == second and (workspace / "dvc.lock").read_text() == "second\n"
