"""Real file systems that cannot take a write: a small tmpfs filled up, and a read-only tmpfs.

Mounting needs root and mount rights (a container may refuse it): the tests that need one are then
skipped with the reason. Unwritable locations that need no mount (a path under a regular file, a path
in ``/proc``) are in the tests themselves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "600k", read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``folder`` (created) for the block; skip the test when that is refused."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and the mount command")
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` with one file, then free ``leave`` bytes (whole pages) of it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * PAGE)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def files_under(folder: Path, but: tuple[str, ...] = ("filler",)) -> list[str]:
    """Every file below ``folder`` (temporaries included), relative, sorted; ``but`` names are left out."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in but)


#: Output locations no process can write: ``unwritable(tmp_path, case)`` gives one of each.
UNWRITABLE = ("under a regular file", "in /proc", "on a read-only file system")


@contextlib.contextmanager
def unwritable(tmp_path: Path, case: str) -> Iterator[Path]:
    """An output folder path of kind ``case`` (one of :data:`UNWRITABLE`); the read-only one needs a mount."""
    if case == "under a regular file":
        (tmp_path / "a_file").write_text("x")
        yield tmp_path / "a_file" / "out"
    elif case == "in /proc":
        yield Path("/proc/fsdino-test") / tmp_path.name / "out"
    else:
        with tmpfs(tmp_path / "read_only", size="64k", read_only=True) as read_only:
            yield read_only / "out"


def run_in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make an empty ``tmp_path/cwd`` the working folder: no repository ``params.yaml`` is read by accident,
    and nothing a step writes by default lands in the checkout."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir
