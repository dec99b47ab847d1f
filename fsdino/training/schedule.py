"""The learning-rate schedules of the training loops: pure functions of the step (no torch, no state)."""

from __future__ import annotations

import math


def learning_rate(
    base: float,
    step: int,
    total_steps: int,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    power: float = 0.9,
) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    Linear warm-up from ``base/100`` over ``warmup_steps``, then over the remaining steps one of:

    * ``constant``: ``base``;
    * ``cosine``: ``base · (1 + cos(π·p)) / 2``;
    * ``poly``: ``base · (1 − p)^power``, HDMNet's ``poly_learning_rate`` (power 0.9), which the paper's
      "initial learning rate of 0.001" follows (§4.1, "the same … learning rate with [23]");

    where p ∈ [0, 1] is the fraction of the decay done (clamped at 1). Step 0 (after warm-up) gets
    ``base`` exactly. A pure function of the step, so a resumed run needs no scheduler state.
    """
    if step < warmup_steps:
        return base * (0.01 + 0.99 * step / warmup_steps)
    if schedule == "constant":
        return base
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    if schedule == "poly":
        return base * (1.0 - progress) ** power
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule: expected constant, cosine or poly, got {schedule!r}")
