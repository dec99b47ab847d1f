"""The ``reproduce`` flow: every stage of ``dvc.yaml`` as a Prefect task, per-fold stages concurrently.

    python -m pipelines                      # the whole DAG in order, one step at a time
    python -m pipelines --gpus 0 1 2 3       # independent steps four at a time, one GPU each
    python -m pipelines --gpus 0 1 2 3 --gpus-per-step 'distill_*=4' teacher_cache=4   # torchrun on 4

Each task decides as ``dvc repro`` does, through DVC's own API: an unchanged stage is skipped, one found
in the run-cache is restored, any other has its outputs removed and its command run in the repository
root with its output streamed to the Prefect log. Right after it succeeds the stage is committed
(``dvc commit -f <stage>``), so ``dvc.lock`` matches what is on disk and a later ``dvc repro`` runs
nothing. A retry re-runs the command, which resumes from the step's own checkpoint in ``outputs/.work/``.
Each evaluation becomes a table artifact ``fsdino-<variant>-fold<f>-shot<k>`` (each cross-domain target
``fsdino-crossdomain-<target>``); the flow ends with the markdown artifact ``fsdino-summary`` (mIoU per
fold and mean). The artifacts are written by ``pipelines/artifacts.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import chdir, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from pipelines.artifacts import publish, publish_summary
from pipelines.dag import Step, dvc_target, load_steps, matches, select

EXIT_INPUT_ERROR = 2  # the components' exit code for bad input (components.cli): a retry cannot help
OUTPUT_TAIL_LINES = 40
GPU_TAG = "gpu"  # on per-fold tasks: a Prefect tag concurrency limit of this name bounds them server-wide
UP_TO_DATE, RESTORED, RAN = "up to date", "restored from run-cache", "ran"
_DVC_LOCK = threading.Lock()  # one DVC operation at a time in this process; DVC's own lock is per process


class StepFailedError(RuntimeError):
    """A step's command exited non-zero; the message names the step and ends with its last output lines."""

    def __init__(self, step: str, returncode: int, tail: Sequence[str]) -> None:
        self.step, self.returncode = step, returncode
        super().__init__(f"step {step} failed with exit code {returncode}; its last output:\n" + "\n".join(tail))


@dataclass(frozen=True)
class StepOptions:
    """How every step of one flow run treats DVC: see :func:`reproduce`."""

    root: str
    force: bool = False
    commit: bool = True
    pull: bool = False
    push: bool = False


class Slots:
    """Bounds how many step commands run at once; with GPU ids, each running command holds its GPUs."""

    def __init__(self, devices: Sequence[str | None]) -> None:
        if not devices:
            raise ValueError("at least one slot (max_parallel >= 1 or one GPU id) is needed")
        self.size = len(devices)
        self._free: list[str | None] = list(devices)
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, count: int = 1) -> Iterator[list[str | None]]:
        """Wait until ``count`` slots are free and take them all at once (a step never sits on part of its
        GPUs while another waits for the rest); yields their GPU ids (``None`` each when not GPUs)."""
        if not 1 <= count <= self.size:
            raise ValueError(f"a step asks for {count} slots; there are {self.size}")
        with self._changed:
            self._changed.wait_for(lambda: len(self._free) >= count)
            taken, self._free = self._free[:count], self._free[count:]
        try:
            yield taken
        finally:
            with self._changed:
                self._free += taken
                self._changed.notify_all()


def ranks_of(step: Step, gpus_per_step: dict[str, int] | None) -> int:
    """How many ranks (GPUs) ``step`` runs on: the value of the first key of ``gpus_per_step`` that names it
    (stage name, group or glob, as ``stages``), else 1."""
    for target, count in (gpus_per_step or {}).items():
        if matches(step, target):
            if count < 1:
                raise ValueError(f"gpus_per_step[{target!r}]: expected a positive number of GPUs, got {count}")
            return count
    return 1


def launched(command: str, ranks: int, step: str) -> str:
    """``command`` as it runs on ``ranks`` ranks: ``python -m X …`` / ``python script.py …`` become
    ``python -m torch.distributed.run --standalone --nproc-per-node=<ranks> -m X …`` (one machine, a free
    port per launch, so concurrent steps do not collide); unchanged for one rank."""
    if ranks == 1:
        return command
    words = command.split(maxsplit=1)
    if len(words) < 2 or Path(words[0]).name not in ("python", "python3"):
        raise ValueError(
            f"step {step}: cannot launch {command!r} on {ranks} ranks (expected 'python -m …' or 'python <script>')"
        )
    return f"{words[0]} -m torch.distributed.run --standalone --nproc-per-node={ranks} {words[1]}"


# --- running one step -------------------------------------------------------------------------------


def shell_argv(command: str) -> list[str]:
    """The command line DVC uses for a stage command: ``$SHELL -c``, without the shell's rc files."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    no_rc = {"bash": ["--noprofile", "--norc"], "zsh": ["--no-rcs"]}.get(Path(shell).name, [])
    return [shell, *no_rc, "-c", command]


def step_env(step: Step, root: Path, devices: Sequence[str | None]) -> dict[str, str]:
    """The environment of a step: this one, plus DVC's ``DVC_ROOT``/``DVC_STAGE`` and the slots' GPUs.

    This interpreter's folder goes first on ``PATH`` so that ``python -m components.…`` is the
    environment the flow runs in (a worker started by absolute path has no activated venv).
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(DVC_ROOT=str(root), DVC_STAGE=step.name, PYTHONUNBUFFERED="1")
    gpus = [device for device in devices if device is not None]
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def stream(argv: list[str], cwd: Path, env: dict[str, str], log: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run ``argv``, sending each output line to ``log``; returns the exit code and the last lines.

    A progress bar redraws with carriage returns: only its last state of each line is logged.
    """
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]
        tail.append(line)
        log(line)
    return process.wait(), list(tail)


def execute(step: Step, root: Path, devices: Sequence[str | None], log: Callable[[str], None]) -> None:
    """Run the step's commands in order in its working folder, under ``torchrun`` with one rank per slot
    when it holds several; raises :class:`StepFailedError` on the first failure."""
    env = step_env(step, root, devices)
    for command in step.cmd:
        command = launched(command, len(devices), step.name)
        log(f"> {command}")
        code, tail = stream(shell_argv(command), root / step.wdir, env, log)
        if code != 0:
            raise StepFailedError(step.name, code, tail)


# --- asking DVC -------------------------------------------------------------------------------------


@contextmanager
def dvc_repo(root: str) -> Iterator[Any]:
    """DVC's ``Repo`` at ``root``, one at a time, with the current folder at ``root`` meanwhile.

    Parts of DVC (the run-cache) resolve paths against the current folder, as its CLI always runs inside
    the project. Every path this module hands to another thread or process is absolute, so the brief
    change of folder under the lock is invisible to the steps running beside it.
    """
    from dvc.repo import Repo

    with _DVC_LOCK, chdir(root), Repo(root) as repo:
        yield repo


def prepare(name: str, options: StepOptions) -> str:
    """Decide a stage as ``dvc repro`` does: :data:`UP_TO_DATE`, :data:`RESTORED`, or :data:`RAN` (to run).

    A changed stage has its outputs removed (``persist`` ones kept), then is restored when the run-cache
    has a run with the same command, dependencies and parameters; only otherwise is it to run.
    """
    from dvc.repo import lock_repo
    from dvc.stage.cache import RunCacheNotFoundError

    with dvc_repo(options.root) as repo, lock_repo(repo):
        (stage,) = repo.stage.collect(dvc_target(options.root, name))
        if not options.force and (stage.frozen or not stage.changed()):
            return UP_TO_DATE
        stage.remove_outs(ignore_remove=False, force=False)
        if options.force:
            return RAN
        try:
            repo.stage_cache.restore(stage, pull=options.pull)
        except RunCacheNotFoundError:
            return RAN
        return RESTORED


def commit(names: Sequence[str], root: str) -> None:
    """``dvc commit -f`` of the stages: outputs into the cache and the run-cache, ``dvc.lock`` updated."""
    with dvc_repo(root) as repo:
        for name in names:
            repo.commit(dvc_target(root, name), force=True)


def push_stage(name: str, root: str) -> None:
    """``dvc push --run-cache <stage>``: the stage's outputs and the run-cache entries to the default remote."""
    with dvc_repo(root) as repo:
        repo.push(targets=[dvc_target(root, name)], run_cache=True)


def pull_run_cache(root: str) -> None:
    """Fetch the remote's run-cache entries only (a few hundred bytes per run of a stage), no outputs: each
    step then pulls the outputs of its own cached run when it is restored (:func:`prepare`), so a machine
    downloads only what the stages it reaches produce, never the outputs of stages outside its sub-DAG."""
    with dvc_repo(root) as repo:
        repo.stage_cache.pull(None)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: every failure but a step's bad-input exit (code 2), which would fail again."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, StepFailedError) and error.returncode == EXIT_INPUT_ERROR)


@task(retries=2, retry_delay_seconds=60, retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def run_step(step: Step, options: StepOptions, slots: Slots, ranks: int = 1) -> str:
    """One DVC stage: skipped, restored or run (holding ``ranks`` slots), then committed; returns what happened."""
    logger = get_run_logger()
    action = prepare(step.name, options)
    if action == RAN:
        with slots.hold(ranks) as devices:
            gpus = [device for device in devices if device is not None]
            logger.info("running %s%s", step.name, f" on GPU {','.join(gpus)}" if gpus else "")
            execute(step, Path(options.root), devices, logger.info)
    if options.commit and action != UP_TO_DATE:
        commit([step.name], options.root)
    if options.push and action == RAN:  # now, not at the end: a later failure elsewhere loses nothing
        push_stage(step.name, options.root)
        logger.info("%s: outputs and run-cache pushed", step.name)
    logger.info("%s: %s", step.name, action)
    publish(step, Path(options.root))
    return action


# --- the flow ---------------------------------------------------------------------------------------


def use_params(root: Path, params: str) -> None:
    """Make ``params`` the project's ``params.yaml`` (DVC and every step read that file)."""
    source, target = (root / params).resolve(), root / "params.yaml"
    if source != target.resolve():
        shutil.copyfile(source, target)
        get_run_logger().info("params.yaml is now a copy of %s", source)


def head_commit(root: Path) -> str:
    """The commit checked out at ``root``, or ``"-"`` outside git."""
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else "-"


def worker_name() -> str:
    """The Prefect worker that started this flow run (its environment names it), or ``"-"``."""
    return os.environ.get("PREFECT__WORKER_NAME") or "-"


def submit_all(
    steps: Sequence[Step], options: StepOptions, slots: Slots, retries: int, delay: float,
    gpus_per_step: dict[str, int] | None = None,
) -> dict:  # fmt: skip
    """Submit every step with ``wait_for`` on its upstream futures; independent steps run side by side."""
    ranks = {step.name: ranks_of(step, gpus_per_step) for step in steps}
    for name, count in ranks.items():  # before anything runs
        if count > slots.size:
            raise ValueError(f"step {name} asks for {count} GPUs (gpus_per_step); this run has {slots.size} slots")
    futures: dict[str, PrefectFuture] = {}
    for step in steps:
        tags = {"fsdino", step.group} | ({GPU_TAG} if step.expanded else set())
        configured = run_step.with_options(
            name=f"stage-{step.group}", task_run_name=step.name, tags=tags, retries=retries, retry_delay_seconds=delay
        )
        upstream = [futures[name] for name in sorted(step.upstream) if name in futures]
        futures[step.name] = configured.submit(step, options, slots, ranks[step.name], wait_for=upstream)
    return futures


def outcomes(futures: dict[str, PrefectFuture]) -> dict[str, str]:
    """What each step did, once all are final; raises the first failure in DAG order."""
    wait(list(futures.values()))
    failed = [name for name, future in futures.items() if not future.state.is_completed()]
    for name in failed:
        state = futures[name].state
        if state.is_failed() or state.is_crashed():
            futures[name].result()  # raises the step's own error
    if failed:
        raise RuntimeError(f"steps did not complete: {', '.join(failed)}")
    return {name: future.result() for name, future in futures.items()}


@flow(name="fsdino-reproduce", task_runner=ThreadPoolTaskRunner())
def reproduce(
    root: str = ".",
    params: str = "params.yaml",
    stages: list[str] | None = None,
    max_parallel: int = 1,
    gpus: list[str] | None = None,
    gpus_per_step: dict[str, int] | None = None,
    commit: bool = True,
    force: bool = False,
    pull: bool = False,
    push: bool = False,
    retries: int = 2,
    retry_delay_seconds: float = 60.0,
) -> dict[str, str]:
    """Reproduce the DVC pipeline at ``root`` (or the sub-DAG of ``stages``) as Prefect tasks.

    Args:
        root: the DVC project (repository root).
        params: parameters file, relative to ``root``; copied over ``params.yaml`` when it is another file.
        stages: stage names, groups or globs (``train@*-2-*``) to run with their upstream; all when empty.
        max_parallel: how many step commands may run at once (ignored when ``gpus`` is given).
        gpus: GPU ids; one command per GPU at a time, pinned with ``CUDA_VISIBLE_DEVICES``.
        gpus_per_step: stage name, group or glob → how many GPUs (slots) that step takes at once; it runs
            under ``torchrun --standalone --nproc-per-node=N`` with those N GPUs visible (first match wins;
            others take one). E.g. ``{"teacher_cache": 8, "distill_*": 4}``: the chain before the folds
            uses the node instead of one GPU. The outputs do not depend on N (docs/orchestration.md).
        commit: ``dvc commit -f`` each step once it succeeds (``dvc.lock`` then matches the outputs).
        force: run every selected step even when DVC says it is up to date.
        pull: fetch the remote's run-cache entries first; a step found there is restored with its outputs
            pulled then (only the stages of this run's sub-DAG, in DAG order).
        push: each step that ran pushes its outputs and the run-cache right after its commit (needs
            ``commit``), so a failed step elsewhere in the run does not hold back what finished.
        retries, retry_delay_seconds: per step, for failures other than bad input.

    Returns:
        ``{stage name: "ran" | "up to date" | "restored from run-cache"}`` in DAG order.
    """
    if push and not commit:
        raise ValueError("push needs commit: only committed outputs are in the DVC cache")
    logger = get_run_logger()
    root_path = Path(root).resolve()
    logger.info("workspace %s at commit %s, worker %s", root_path, head_commit(root_path), worker_name())
    use_params(root_path, params)
    steps = load_steps(root_path)
    steps = select(steps, stages) if stages else steps
    names = [step.name for step in steps]
    logger.info("%d steps: %s", len(steps), ", ".join(names))
    if pull:
        pull_run_cache(str(root_path))
    options = StepOptions(root=str(root_path), force=force, commit=commit, pull=pull, push=push)
    slots = Slots(list(gpus) if gpus else [None] * max_parallel)
    futures = submit_all(steps, options, slots, retries, retry_delay_seconds, gpus_per_step)
    try:
        done = outcomes(futures)
    finally:
        publish_summary(steps, root_path)
    return done
