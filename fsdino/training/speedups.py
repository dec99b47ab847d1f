"""Opt-in training speed-ups: ``loop.compile``, ``loop.channels_last`` and ``loop.fused_adamw``.

This module is the single place where they are applied. Both training loops use it, and so does the
benchmark that decides their defaults (``benchmarks/train_step.py``, issue #6 item 4), so the
benchmark measures the code that ships. Each applies to the module a loop trains:

* episodic training: the whole FS-DINO forward (the frozen encoder included);
* distillation: the adapter (the frozen student stays as it is).

What each does:

* ``compile``: ``torch.compile`` of that module; compilation happens in the first steps.
* ``channels_last``: the module's 4-D weights and its 4-D inputs in ``torch.channels_last``.
* ``fused_adamw``: ``torch.optim.AdamW(fused=True)``; the default is torch's own choice (foreach on CUDA).

All three are off by default. On the CPU every variant measured within noise of eager
(``benchmarks/results/cpu-2026-11-25-train.json``). The GPU figures that would justify turning one on
are still to be taken.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fsdino.training.config import LoopConfig


def adamw(parameters: Iterable[nn.Parameter], config: LoopConfig) -> torch.optim.AdamW:
    """AdamW with the loop's learning rate and weight decay, fused when ``config.fused_adamw``
    (torch fuses float parameters on the CPU and CUDA)."""
    fused = True if config.fused_adamw else None  # None: torch's default implementation
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def to_channels_last(module: nn.Module, config: LoopConfig) -> None:
    """Convert ``module``'s 4-D weights to channels-last in place when ``config.channels_last``.

    Call it before wrapping the module in DDP (DDP must not see its parameters change afterwards);
    checkpoints and validation, which use the module itself, see the same parameters.
    """
    if config.channels_last:
        module.to(memory_format=torch.channels_last)


def compiled(module: nn.Module, config: LoopConfig) -> nn.Module:
    """``torch.compile(module)`` when ``config.compile`` (after any DDP wrapping), else ``module``.

    The compiled wrapper is for the loop's forward only; its parameters are ``module``'s.
    """
    return torch.compile(module) if config.compile else module


def input_format(inputs: torch.Tensor, config: LoopConfig) -> torch.Tensor:
    """A B×C×H×W input of the trained module (query images; the adapter's feature maps) in channels-last
    when ``config.channels_last``; tensors of other dimensions are returned as they are."""
    if config.channels_last and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs
