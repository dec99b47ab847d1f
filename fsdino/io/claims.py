"""Claim files: which process is building which piece of shared work, on one machine or several.

A claim is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on
NFSv3+), naming the host, the process id and the process's start time. Its holder touches it while it
works (the heartbeat); it is removed when the work is done. A claim is stale, and may be taken over, when
its process is gone (same host: checked through ``/proc``) or, for another host, when its heartbeat is
older than ``stale_after_s``. Taking over renames the stale file away first, so of two processes that
both found it stale only one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def holder_identity() -> dict[str, object]:
    """This process as a claim names it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid())}


@dataclass
class Claim:
    """A claim this process holds."""

    path: Path

    def heartbeat(self) -> None:
        """Say the work is still going (refreshes the file's mtime)."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def claim_is_stale(path: Path, stale_after_s: float) -> bool:
    """Whether the claim at ``path`` belongs to nobody alive (see the module docstring)."""
    try:
        holder = json.loads(path.read_text())
        heartbeat = path.stat().st_mtime
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return time.time() - path.stat().st_mtime > stale_after_s  # half-written by a process that died
    if holder.get("host") == socket.gethostname():
        return _start_ticks(int(holder.get("pid", -1))) != holder.get("start")
    return time.time() - heartbeat > stale_after_s


def try_claim(path: Path, *, stale_after_s: float = 600.0) -> Claim | None:
    """Claim ``path`` for this process; ``None`` when a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not claim_is_stale(path, stale_after_s):
                return None
            retired = path.with_name(f"{path.name}.stale-{os.getpid()}")
            try:
                os.rename(path, retired)  # only one of several racing processes gets to rename it
            except FileNotFoundError:
                continue
            if not claim_is_stale(retired, stale_after_s):  # another process re-claimed it in between
                with contextlib.suppress(OSError):
                    os.link(retired, path)
                retired.unlink(missing_ok=True)
                return None
            retired.unlink(missing_ok=True)
            continue
        with os.fdopen(handle, "w") as stream:
            json.dump({**holder_identity(), "time": time.time()}, stream)
        return Claim(path)
    return None
