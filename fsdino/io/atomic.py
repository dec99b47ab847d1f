"""Writing files so that a reader never sees half of one: write beside the target, then rename.

Rules every writer here follows (``docs/artifacts.md``, "How every output file is written"):

* a file or folder appears whole or not at all; a temporary is removed on any error;
* new files get the mode the process's umask gives (``0o644`` under the usual ``0o022``), folders
  likewise (``0o755``), as ``open``/``mkdir`` would create them;
* an output location that cannot be written (not a folder, read-only, no permission) and a disk that
  fills up raise :class:`~fsdino.errors.OutputError`, a one-line error naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fsdino.errors import OutputError, reason, write_failure

_ATTEMPTS = 100


@contextlib.contextmanager
def _write_errors_named(targets: list[Path]) -> Iterator[None]:
    """Turn a full disk or a read-only file system met while writing ``targets`` into an OutputError."""
    try:
        yield
    except OutputError:
        raise
    except Exception as error:
        cause = write_failure(error)
        if cause is None:
            raise
        shown = ", ".join(str(target) for target in targets)
        raise OutputError(
            f"{shown}: cannot write: {reason(cause)} (nothing was written; free some space or choose another "
            "output folder)"
        ) from error


def _create_fresh(folder: Path, prefix: str, suffix: str, create: Callable[[Path], None]) -> Path:
    """``create`` a path with a fresh random name in ``folder`` (``create`` raises FileExistsError if taken)."""
    for _ in range(_ATTEMPTS):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, f"no free temporary name in {folder}")


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """An empty file with a fresh name; the umask decides its mode (``tempfile.mkstemp`` forces 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    return _create_fresh(folder, prefix, suffix, lambda path: os.close(os.open(path, flags, 0o666)))


def _new_folder(folder: Path, prefix: str) -> Path:
    """An empty folder with a fresh name; the umask decides its mode (``tempfile.mkdtemp`` forces 0700)."""
    return _create_fresh(folder, prefix, "", lambda path: path.mkdir(mode=0o777))


def check_writable_dir(path: Path | str, what: str = "output folder") -> Path:
    """Raise :class:`OutputError` unless ``path`` is, or can be created as, a folder this process can write.

    Call it before any work whose results go there. It creates the missing folders and a probe file, then
    removes what it created, so the file system is left as it was. ``what`` names the option or field
    (``--out``, ``stage_sa1b.output_dir``) in the message.
    """
    path = Path(path)
    existing, created = path, []
    while not existing.exists() and existing != existing.parent:
        created.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise OutputError(f"{path}: {what} exists and is not a folder")
        raise OutputError(f"{path}: {what} cannot be created: {existing} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _new_file(path, ".fsdino-probe.", ".tmp").unlink()
    except OSError as error:
        raise OutputError(f"{path}: {what} is not a writable folder ({reason(error)})") from error
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def _temporary_beside(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _new_file(path.parent, f".{path.stem}.", f".tmp{path.suffix}")
    except OSError as error:
        raise OutputError(f"{path}: cannot create the file here ({reason(error)})") from error


@contextlib.contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; once the block succeeds they are all renamed into
    place, on error all removed, so files that belong together (a mask and its overlay) appear together.

    The temporary names keep the targets' suffixes, so writers that choose a format by extension
    (``.png``, ``.npy``, ``.parquet``) behave as they would on the targets.
    """
    targets = [Path(path) for path in paths]
    temporaries: list[Path] = []
    try:
        for target in targets:
            temporaries.append(_temporary_beside(target))
        with _write_errors_named(targets):
            yield temporaries
            for temporary, target in zip(temporaries, targets, strict=True):
                os.replace(temporary, target)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed to ``path``, on error removed."""
    with atomic_paths(path) as (temporary,):
        yield temporary


def write_files_atomic(contents: Mapping[Path, bytes]) -> None:
    """Write several files that belong together: all of them appear, or none (see :func:`atomic_paths`)."""
    with atomic_paths(*contents) as temporaries:
        for temporary, data in zip(temporaries, contents.values(), strict=True):
            temporary.write_bytes(data)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    write_files_atomic({Path(path): data})


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, data: Any) -> None:
    write_text_atomic(path, json_text(data))


def json_text(data: Any) -> str:
    """The JSON text every output file uses: indented by two, with a final newline."""
    return json.dumps(data, indent=2) + "\n"


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` (an older folder
    there is removed), on error it is removed, so a reader never sees a half-written folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = _new_folder(path.parent, f".{path.name}.partial-")
    except OSError as error:
        raise OutputError(f"{path}: cannot create the folder here ({reason(error)})") from error
    try:
        with _write_errors_named([path]):
            yield staging
            if path.exists():
                retired = _new_folder(path.parent, f".{path.name}.old-")
                path.rename(retired / path.name)
                shutil.rmtree(retired)
            staging.rename(path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
