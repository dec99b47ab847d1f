"""Wall-clock timing with warm-up and medians, and peak memory on CUDA and on the CPU.

GPU work is asynchronous, so every timed iteration is bracketed by ``torch.cuda.synchronize``: the time
is what a caller waits for, launch overhead included. Peak memory is what a case needs above what was
allocated before it started (its model's weights count when the model is built inside the meter):

* CUDA: ``torch.cuda.max_memory_allocated`` (tensors only; the caching allocator's reserve is not counted).
* CPU (Linux): the process's peak resident set (``VmHWM``), reset by writing ``5`` to
  ``/proc/self/clear_refs``; freed heap is handed back with glibc's ``malloc_trim`` first so that memory
  left over from an earlier case does not hide this one's growth. Elsewhere it is ``None``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed iteration (after ``warmup`` untimed ones)."""

    warmup: int
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {
            "warmup": self.warmup,
            "iterations": len(self.times_s),
            "median_s": self.median_s,
            "min_s": min(self.times_s),
            "max_s": max(self.times_s),
            "times_s": list(self.times_s),
        }


def measure(fn: Callable[[], object], device: torch.device, *, warmup: int, iterations: int) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``iterations`` calls one by one."""
    if iterations < 1 or warmup < 0:
        raise ValueError(f"need iterations ≥ 1 and warmup ≥ 0, got {iterations} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(warmup=warmup, times_s=tuple(times))


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to hand back
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cpu_peak_supported() -> bool:
    """Whether the CPU peak resident set can be reset and read (Linux ≥ 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
    except (OSError, KeyError):
        return False
    return True


class PeakMemory:
    """Peak bytes a case needs above the level at :meth:`start`.

    Call :meth:`start` before building what the case needs, :meth:`reset_peak` before each measured
    case (the level at ``start`` is kept, so the weights built since then stay counted), and
    :meth:`peak_bytes` after it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self._base: int | None = None
        self._supported = device.type == "cuda" or cpu_peak_supported()

    def _current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _status_kib("VmRSS") * 1024

    def start(self) -> PeakMemory:
        self.reset_peak()
        self._base = self._current() if self._supported else None
        return self

    def reset_peak(self) -> None:
        _trim_heap()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._supported:
            _CLEAR_REFS.write_text("5")

    def peak_bytes(self) -> int | None:
        """Peak since the last :meth:`reset_peak`, minus the level at :meth:`start` (``None`` if unknown)."""
        if self._base is None:
            return None
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024
        return max(peak - self._base, 0)


def release(device: torch.device) -> None:
    """Free what the last case left behind before the next one is built."""
    _trim_heap()
    if device.type == "cuda":
        torch.cuda.empty_cache()
