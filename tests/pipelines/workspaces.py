"""Copies of this repository to run the pipeline in: the committed files, the tiny profile (with changes)
rendered as params.yaml, a fresh git history, no dvc.lock."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
AUTHOR = ["-c", "user.name=t", "-c", "user.email=t@t"]


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied key by key (nested mappings merged, other values replaced)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def tiny_workspace(target: Path, changes: Mapping[str, Any] | None = None) -> Path:
    """This repository's files with the tiny profile (``changes`` merged in) as params.yaml, committed in a
    new git repository at ``target`` (as tests/pipeline)."""
    from components.profile import render

    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    for name in [*subprocess.run(listing, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()]:
        if (ROOT / name).is_file() and not name.startswith("outputs/"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(ROOT / name, target / name)
    (target / "profiles").mkdir(exist_ok=True)
    profile = yaml.safe_load((ROOT / "tests/pipeline/tiny_profile.yaml").read_text())
    (target / "profiles/tiny.yaml").write_text(yaml.safe_dump(merged(profile, changes or {}), sort_keys=False))
    (target / "params.yaml").write_text(render("tiny", target / "profiles"))
    (target / ".dvc").mkdir(exist_ok=True)
    (target / ".dvc/config").write_text("[core]\n    autostage = true\n")
    (target / "dvc.lock").unlink(missing_ok=True)
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    subprocess.run(["git", *AUTHOR, "commit", "-qm", "init"], cwd=target, check=True)
    return target
