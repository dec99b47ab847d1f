"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the trainable modules' state, the optimiser (and grad scaler) state, the position in
the run (epoch, step within the epoch, global step), the metric history, and a fingerprint of the run's
configuration; it is written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fsdino.checkpoints import atomic_torch_save, load_weights_file
from fsdino.errors import InputError


@dataclass
class RunPosition:
    """Where a run is: ``epoch`` being trained and ``step`` batches of it already done."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # running sums over the current epoch's steps
    best_score: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def add(self, values: dict[str, float]) -> None:
        """Count one finished step and add its metrics to the epoch's running sums."""
        self.step += 1
        self.global_step += 1
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def close_epoch(self, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Append the epoch's means (and ``extra`` metrics) to the history and move to the next epoch."""
        row = {"epoch": self.epoch, **{k: v / max(self.step, 1) for k, v in self.sums.items()}, **(extra or {})}
        self.history.append(row)
        self.epoch, self.step, self.sums = self.epoch + 1, 0, {}
        return row


def save_training_state(
    path: Path,
    states: dict[str, dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    position: RunPosition,
    fingerprint: str,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write ``states`` (named state dicts of what trains), the optimiser and the run position, atomically."""
    payload: dict[str, Any] = {
        "states": states,
        "optimizer": optimizer.state_dict(),
        "position": asdict(position),
        "fingerprint": fingerprint,
    }
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    atomic_torch_save(payload, path)


def load_training_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    fingerprint: str,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[dict[str, dict[str, torch.Tensor]], RunPosition]:
    """Restore the optimiser (and scaler) and return the saved state dicts and position for the caller to
    load; a checkpoint written under another configuration is refused."""
    payload = load_weights_file(path)
    if payload.get("fingerprint") != fingerprint:
        raise InputError(
            f"{path}: training checkpoint belongs to another configuration; delete it or restore that configuration"
        )
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and "scaler" in payload:
        scaler.load_state_dict(payload["scaler"])
    return payload["states"], RunPosition(**payload["position"])
