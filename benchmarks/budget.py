"""A wall-clock budget for a benchmark run, so that a run under a hard time limit (a lent GPU's 10-minute
call) ends on its own and writes what it measured instead of being killed with nothing written.

``python -m benchmarks.run --budget-s T`` gives the suites, in the order they run, shares of what is left
of ``T`` in proportion to :data:`WEIGHTS`: time a fast suite does not use passes on to the later ones.
Inside a suite, a case that has not started when the suite's share is spent is recorded as ``skipped``
(note: ``budget``), never half-run; a case already running is let finish. So a suite overruns its share by
at most one case: give the outer time limit a margin of the longest case (a ``torch.compile`` warm-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

#: Relative shares of the run's budget, by suite (inference is the headline and sweeps three models).
WEIGHTS: dict[str, float] = {"inference": 3.0, "caching": 1.5, "distill": 1.5, "train": 3.0, "encoder": 1.0, "dvc": 1.0}
#: The note of a case skipped because its suite's share of the budget was spent.
SKIPPED_NOTE = "budget: not started, the suite's share of --budget-s was spent"


class Budget:
    """A deadline ``seconds`` from now (``None``: no deadline).

    Args:
        seconds: the time allowed; must be > 0 when given.
        clock: monotonic seconds (replaceable in tests).
    """

    def __init__(self, seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"a budget must be > 0 seconds, got {seconds}")
        self.seconds = seconds
        self._clock = clock
        self._deadline = None if seconds is None else clock() + seconds

    def remaining_s(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        return None if self._deadline is None else max(self._deadline - self._clock(), 0.0)

    def expired(self) -> bool:
        remaining = self.remaining_s()
        return remaining is not None and remaining <= 0.0

    def allows(self, seconds: float) -> bool:
        """Whether a case expected to take ``seconds`` fits in what is left (always, without a deadline)."""
        remaining = self.remaining_s()
        return remaining is None or remaining >= seconds

    def share(self, part: str, later: Sequence[str], weights: Mapping[str, float] = WEIGHTS) -> Budget:
        """The budget of ``part`` (a suite, or a model within one) when the ``later`` parts still follow it:
        its weight's part of what is left (a name missing from ``weights`` weighs 1)."""
        remaining = self.remaining_s()
        if remaining is None:
            return Budget(None, self._clock)
        weights = [weights.get(name, 1.0) for name in (part, *later)]
        seconds = remaining * weights[0] / sum(weights)
        return Budget(seconds, self._clock) if seconds > 0 else _spent(self._clock)

    def to_dict(self) -> dict[str, float | None]:
        remaining = self.remaining_s()
        return {"budget_s": self.seconds, "left_s": None if remaining is None else round(remaining, 1)}


def _spent(clock: Callable[[], float]) -> Budget:
    budget = Budget(1.0, clock)
    budget._deadline = clock()
    return budget


UNLIMITED = Budget(None)
