"""The reproduction DAG, read from ``dvc.yaml`` through DVC's own API: ``dvc.yaml`` is its one definition.

:func:`load_steps` asks DVC for the pipeline stages after ``foreach``/``matrix`` expansion and ``${}``
interpolation (``train@full-0-1``), and links each stage to the stages that produce its dependencies.
Prefect's flow (``pipelines/reproduce.py``) only walks this list; adding a stage to ``dvc.yaml`` adds a
task, with no second description of the graph to keep in step.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

GROUP_SEPARATOR = "@"  # DVC names expanded stages "<group>@<key>", e.g. "train@full-0-1"
PROJECT_FILE = "dvc.yaml"


@dataclass(frozen=True)
class Step:
    """One DVC stage as the orchestrator sees it.

    Attributes:
        name: DVC's address of the stage from the repository root (``distill_1``, ``train@full-0-1``,
            ``sub/dvc.yaml:stage`` for a stage of another ``dvc.yaml``).
        cmd: the stage's commands in order, as DVC runs them (a multi-line ``cmd`` is one per line).
        deps: dependency paths relative to the repository root (parameter files left out).
        outs: output paths relative to the repository root.
        upstream: names of the stages whose outputs overlap one of ``deps``.
        wdir: the folder the commands run in, relative to the repository root.
    """

    name: str
    cmd: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    upstream: frozenset[str] = frozenset()
    wdir: str = "."

    @property
    def group(self) -> str:
        return group_of(self)

    @property
    def expanded(self) -> bool:
        """Whether the stage is one item of a ``foreach``/``matrix`` group (a per-fold step)."""
        return GROUP_SEPARATOR in self.name


def group_of(step: Step | str) -> str:
    """The stage group: ``train`` for ``train@full-0-1``, the name itself for a plain stage."""
    name = step.name if isinstance(step, Step) else step
    return name.split(GROUP_SEPARATOR, 1)[0]


def overlaps(first: str, second: str) -> bool:
    """Whether two root-relative paths are equal or one lies inside the other (as DVC links stages)."""
    first, second = first.rstrip("/"), second.rstrip("/")
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")


def link(steps: Sequence[Step]) -> list[Step]:
    """``steps`` with ``upstream`` filled in from their paths, in topological order.

    Stage ``b`` is upstream of ``a`` when an output of ``b`` equals, contains or lies inside a
    dependency of ``a`` (``report`` depends on ``outputs/train``, written by every ``train@…``).
    """
    linked = [
        replace(step, upstream=frozenset(other.name for other in steps if other is not step and _feeds(other, step)))
        for step in steps
    ]
    return topological_order(linked)


def _feeds(producer: Step, consumer: Step) -> bool:
    return any(overlaps(out, dep) for out in producer.outs for dep in consumer.deps)


def topological_order(steps: Sequence[Step]) -> list[Step]:
    """Upstream before downstream; ties keep their order in ``steps`` (the order of ``dvc.yaml``).

    Raises:
        ValueError: when the graph has a cycle (DVC refuses those too).
    """
    names = {step.name for step in steps}
    done: set[str] = set()
    ordered: list[Step] = []
    while len(ordered) < len(steps):
        ready = [s for s in steps if s.name not in done and (s.upstream & names) <= done]
        if not ready:
            stuck = sorted(s.name for s in steps if s.name not in done)
            raise ValueError(f"the stage graph has a cycle among: {', '.join(stuck)}")
        ordered.append(ready[0])
        done.add(ready[0].name)
    return ordered


def select(steps: Sequence[Step], targets: Iterable[str], with_upstream: bool = True) -> list[Step]:
    """The sub-DAG for ``targets``, in topological order.

    A target is a stage name (``evaluate@full-2-1``), a group (``train``: all its items, as in
    ``dvc repro train``) or a glob (``train@*-2-*`` for fold 2 of every variant and shot). With
    ``with_upstream`` the stages they depend on, transitively, are included.

    A glob may match nothing when another target matches (``ablation_train@*-2-*`` on a profile whose
    ablation runs only fold 0): one deployment per fold then serves every profile.

    Raises:
        ValueError: when a name or group matches no stage, or no target matches any.
    """
    by_name = {step.name: step for step in steps}
    chosen: set[str] = set()
    targets = list(targets)
    for target in targets:
        matched = {step.name for step in steps if matches(step, target)}
        if not matched and not _is_glob(target):
            raise ValueError(f"stage {target!r} is not in dvc.yaml (known: {', '.join(by_name)})")
        chosen |= matched
    if targets and not chosen:
        raise ValueError(f"no stage of dvc.yaml matches {', '.join(map(repr, targets))} (known: {', '.join(by_name)})")
    if with_upstream:
        chosen = _with_upstream(by_name, chosen)
    return [step for step in topological_order(steps) if step.name in chosen]


def _is_glob(target: str) -> bool:
    return any(character in target for character in "*?[")


def matches(step: Step, target: str) -> bool:
    """Whether ``target`` names ``step``: its name, its group (``train``) or a glob (``train@*-2-*``)."""
    return step.name == target or group_of(step) == target or fnmatch.fnmatchcase(step.name, target)


def _with_upstream(by_name: dict[str, Step], names: set[str]) -> set[str]:
    pending, closed = list(names), set(names)
    while pending:
        for parent in by_name[pending.pop()].upstream - closed:
            closed.add(parent)
            pending.append(parent)
    return closed


def load_steps(root: str | os.PathLike[str] = ".") -> list[Step]:
    """The pipeline stages of the DVC project at ``root``, linked and in topological order.

    Only stages with a command are steps (``.dvc`` data sources have none). Reads ``dvc.yaml`` and the
    params files it interpolates from; runs nothing.
    """
    from dvc.repo import Repo

    with Repo(os.fspath(root)) as repo:
        steps = [_step_of(stage, Path(repo.root_dir)) for stage in repo.index.stages if stage.cmd]
    return link(steps)


def _step_of(stage, root: Path) -> Step:
    from dvc.dependency.param import ParamsDependency

    commands = stage.cmd if isinstance(stage.cmd, list) else stage.cmd.splitlines()
    deps = [dep for dep in stage.deps if not isinstance(dep, ParamsDependency) and dep.is_in_repo]
    dvcfile = _relative(stage.dvcfile.path, root)
    return Step(
        name=stage.name if dvcfile == PROJECT_FILE else f"{dvcfile}:{stage.name}",
        cmd=tuple(command for command in commands if command.strip()),
        deps=tuple(_relative(dep.fs_path, root) for dep in deps),
        outs=tuple(_relative(out.fs_path, root) for out in stage.outs),
        wdir=_relative(stage.wdir, root),
    )


def dvc_target(root: str | os.PathLike[str], name: str) -> str:
    """The DVC target of stage ``name`` whatever the current folder: ``/abs/root/dvc.yaml:train@full-0-1``."""
    dvcfile, _, stage = name.rpartition(":") if ":" in name else (PROJECT_FILE, "", name)
    return f"{Path(root).resolve() / dvcfile}:{stage}"


def _relative(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()
