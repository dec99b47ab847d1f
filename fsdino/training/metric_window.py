"""Per-step metrics thinned for the tracker: the mean of each value over a window of optimiser steps.

Logging every step costs one tracking call per step (≈1.2M HTTP calls for a paper-coco training run); the
loops hand the tracker one mean per ``LoopConfig.log_every`` steps instead, plus the epoch rows as before.
"""

from __future__ import annotations

from collections.abc import Mapping


class MetricWindow:
    """Sums of per-step values since the last flush; :meth:`add` returns the means (each over the steps that
    had that value) every ``every`` steps."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"every: at least 1 step, got {every}")
        self.every = every
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}  # per key: a value may be missing from some steps

    def add(self, values: Mapping[str, float], step: int) -> dict[str, float] | None:
        """Add one step's ``values`` (``step``: the global step after it, from 1); the window's means when
        ``step`` is a multiple of ``every``, else ``None``."""
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1
        return self.flush() if step % self.every == 0 else None

    def flush(self) -> dict[str, float] | None:
        """The means of the steps added since the last flush (``None`` if there were none); starts a new window."""
        if not self._counts:
            return None
        means = {key: total / self._counts[key] for key, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return means
