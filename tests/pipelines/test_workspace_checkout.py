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


def run_pull(workspace: Path | None, commit: str | None, cwd: Path) -> subprocess.CompletedProcess:
    """The step's script as Prefect runs it with ``shell: true`` (one shell command per line), from ``cwd``
    (wherever the worker started the flow run), with the worker's ``FSDINO_WORKSPACE``."""
    step = pull_step()
    assert step["shell"] is True and "{{" not in step["script"]  # nothing for `prefect deploy` to fill in
    env = {k: v for k, v in os.environ.items() if k not in ("FSDINO_COMMIT", "FSDINO_WORKSPACE")}
    env |= {"FSDINO_COMMIT": commit} if commit else {}
    env |= {"FSDINO_WORKSPACE": str(workspace)} if workspace else {}
    return subprocess.run(step["script"], shell=True, cwd=cwd, env=env, capture_output=True, text=True)


def test_the_working_folder_is_the_path_the_checkout_printed() -> None:
    steps = yaml.safe_load((ROOT / "infra/prefect.yaml").read_text())["pull"]
    assert steps[0]["prefect.deployments.steps.run_shell_script"]["id"] == "workspace"
    assert steps[1] == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ workspace.stdout }}"}}


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

    result = run_pull(None, first, tmp_path)
    assert result.returncode != 0 and "FSDINO_WORKSPACE: is not set on this worker" in result.stderr

    result = run_pull(workspace, first, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(workspace.resolve())  # becomes the flow's working folder
    assert git("rev-parse", "HEAD", cwd=workspace) == first and (workspace / "dvc.lock").read_text() == "first\n"
    assert (workspace / "outputs" / "state.pt").read_text() == "a checkpoint"

    (workspace / "dvc.lock").write_text("changed again\n")
    result = run_pull(workspace, None, tmp_path)  # no commit given: the newest origin/main
    assert result.returncode == 0, result.stderr
    assert git("rev-parse", "HEAD", cwd=workspace) == second and (workspace / "dvc.lock").read_text() == "second\n"
