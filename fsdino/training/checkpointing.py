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
from torch import nn

from fsdino.checkpoints import atomic_torch_save, load_weights_file
from fsdino.errors import InputError


@dataclass
class RunPosition:
    """Where a run is: ``epoch`` being trained and ``step`` batches of it already done."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0  # over the steps of the current epoch done so far
    history: list[dict[str, float]] = field(default_factory=list)


def save_training_state(
    path: Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    position: RunPosition,
    fingerprint: str,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    payload: dict[str, Any] = {
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "optimizer": optimizer.state_dict(),
        "position": asdict(position),
        "fingerprint": fingerprint,
    }
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    atomic_torch_save(payload, path)


def load_training_state(
    path: Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    fingerprint: str,
    scaler: torch.amp.GradScaler | None = None,
) -> RunPosition:
    """Restore a run; a checkpoint written under another configuration is refused."""
    payload = load_weights_file(path)
    if payload.get("fingerprint") != fingerprint:
        raise InputError(
            f"{path}: training checkpoint belongs to another configuration; delete it or restore that configuration"
        )
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and "scaler" in payload:
        scaler.load_state_dict(payload["scaler"])
    return RunPosition(**payload["position"])
