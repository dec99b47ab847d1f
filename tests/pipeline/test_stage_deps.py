"""Every stage of ``dvc.yaml`` declares the project code it runs, so a change to that code re-runs the stage.

DVC only re-runs a stage whose declared deps changed. A module the stage imports but does not declare
can therefore change its outputs silently: a second ``dvc repro`` says "didn't change, skipping" and
keeps stale results. (Found this way: ``evaluate`` did not declare ``fsdino/models``, so an edit to the PCS
baseline in ``fsdino/models/baseline.py`` left the evaluation outputs as they were.)

The check reads the imports of each stage's ``python -m`` module with :mod:`ast`. Function-level imports
count too. It follows them through ``fsdino``, ``components`` and ``pipelines``, and asserts that every
module reached is covered by a declared dep (the file, or a folder above it). It does not follow, and
does not require, :data:`NOT_OUTPUT_CODE`: modules that cannot change a stage's outputs. Those are the
config schemas (every key is written out in ``params.yaml``, which DVC tracks), the CLI and MLflow
plumbing, errors, atomic writes and the progress-bar switch. Nor does it require package ``__init__`` files.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fsdino", "components", "pipelines")
NOT_OUTPUT_CODE = frozenset({
    "components/config.py", "components/params.py", "components/crossdomain_config.py", "components/report_config.py",
    "components/tracking_config.py", "fsdino/config.py", "fsdino/training/config.py",  # schemas: the values
    # are in params.yaml
    "components/cli.py", "components/tracking.py",  # argument parsing, work folders, MLflow logging
    "fsdino/errors.py", "fsdino/io/atomic.py",  # error types; write-then-rename
    "fsdino/io/claims.py",  # which process builds a teacher shard, not what the shard holds
    "fsdino/progress.py",  # whether progress bars are drawn
})  # fmt: skip


def module_file(name: str) -> str | None:
    """``a.b.c`` → ``a/b/c.py`` or ``a/b/c/__init__.py`` relative to the root, if it is project code."""
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


def imported_files(file: str) -> set[str]:
    """The project modules ``file`` imports anywhere in its body (absolute and relative imports)."""
    tree = ast.parse((ROOT / file).read_text())
    package = file.removesuffix(".py").removesuffix("/__init__").split("/")
    if not file.endswith("__init__.py"):
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}  # `from a import b` may be a module
    return {found for name in names if name.split(".")[0] in PACKAGES and (found := module_file(name))}


def stage_code(module: str) -> set[str]:
    """The project files a ``python -m module`` stage runs, through its imports (see the module docstring)."""
    start = module_file(module)
    assert start is not None, f"{module}: no such project module"
    seen, todo = {start}, [start]
    while todo:
        file = todo.pop()
        if file in NOT_OUTPUT_CODE and file != start:
            continue
        for found in imported_files(file) - seen:
            seen.add(found)
            todo.append(found)
    return {file for file in seen if file not in NOT_OUTPUT_CODE and not file.endswith("__init__.py")}


def undeclared(code: set[str], deps: list[str]) -> list[str]:
    """The files of ``code`` that no dep covers (a dep covers itself and, as a folder, what is under it)."""
    folders = [dep.rstrip("/") + "/" for dep in deps]
    return sorted(file for file in code if file not in deps and not any(file.startswith(f) for f in folders))


def stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name → (its ``python -m`` module, its deps that are code, not outputs)."""
    result = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)  # foreach stages keep cmd and deps under `do`
        module = re.search(r"python -m (\S+)", body["cmd"]).group(1)
        result[name] = (module, [dep for dep in body.get("deps", []) if not dep.startswith(("outputs", "${"))])
    return result


STAGES = stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_stage_declares_every_module_it_runs(name):
    module, deps = STAGES[name]
    missing = undeclared(stage_code(module), deps)
    assert not missing, f"dvc.yaml stage {name!r} ({module}) runs code it does not declare in deps: {missing}"
    assert all((ROOT / dep).exists() for dep in deps), f"{name}: a dep that does not exist: {deps}"


def test_the_check_sees_imports_through_the_whole_project():
    code = stage_code("components.evaluate")
    # direct, indirect (engine → models) and function-level imports; schemas left out
    assert {"components/evaluate.py", "fsdino/evaluation/engine.py", "fsdino/models/baseline.py"} <= code
    assert "components/config.py" not in code and "fsdino/config.py" not in code
    deps = ["components/evaluate.py", "fsdino/evaluation"]
    assert "fsdino/models/baseline.py" in undeclared(code, deps)  # what this test was written for
    assert "fsdino/evaluation/engine.py" not in undeclared(code, deps)  # covered by its folder
