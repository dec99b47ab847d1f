"""Servers started as subprocesses on 127.0.0.1 for benchmarks and tests: a free port, a readiness poll,
and a context that stops the whole process group (``mlflow server`` forks its workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; a :class:`RuntimeError` when ``process`` exits first or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str] | None, ready_url: str, log_path: Path, timeout_s: float = 60.0
) -> Iterator[subprocess.Popen]:
    """Start ``command`` in its own process group (output to ``log_path``), wait for ``ready_url``, and stop
    the group on exit; a start that fails raises with the end of the log."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                wait_until_ready(ready_url, process, timeout_s)
            except RuntimeError as error:
                raise RuntimeError(f"{error}\n--- {log_path.name} ---\n{tail(log_path)}") from None
            yield process
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]
