"""Hyper-parameters of the training loops (pydantic; the pipeline fills them from ``params.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fsdino.errors import InputError
from fsdino.training.schedule import learning_rate

#: Autocast: ``auto`` (bf16 on GPUs that have it, else fp16; off on CPU), ``off``, or a fixed dtype.
AmpMode = Literal["auto", "off", "bf16", "fp16"]


class LoopConfig(BaseModel):
    """What every loop shares. Defaults are the paper's (§4.1): AdamW, initial lr 1e-3 with HDMNet's poly
    decay (power 0.9, no warm-up, weight decay 0.01: the paper takes "the same … optimizer and learning
    rate" as [23], HDMNet), batch 8."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(
        default=8,
        ge=1,
        description="the global batch: summed over the ranks of a torchrun launch, each rank takes batch_size / N "
        "(paper §4.1: batch 8 on 2-4 GPUs for distillation, on 1 GPU for training; HDMNet sets 4 per GPU on 2)",
    )
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(default=200, ge=1, description="steps between training checkpoints")
    log_every: int = Field(
        default=50,
        ge=1,
        description="steps per tracked metric point: the mean over the window (plus every epoch's row)",
    )
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap for CPU demos")
    num_workers: int = Field(default=0, ge=0)
    amp: AmpMode = "auto"
    device: str = "auto"
    schedule: Literal["constant", "cosine", "poly"] = Field(
        default="poly",
        description="learning rate after warm-up: poly = lr·(1 − step/total)^power, HDMNet's (the paper gives lr "
        "1e-3 as the initial rate)",
    )
    power: float = Field(default=0.9, gt=0, description="exponent of the poly schedule (HDMNet: 0.9)")
    warmup_steps: int = Field(default=0, ge=0, description="linear warm-up from lr/100 over this many steps")
    grad_clip: float | None = Field(default=None, gt=0, description="max global gradient norm (None: no clipping)")
    compile: bool = Field(default=False, description="torch.compile the trained module (fsdino.training.speedups)")
    channels_last: bool = Field(default=False, description="channels-last weights and image inputs")
    fused_adamw: bool = Field(default=False, description="AdamW(fused=True) instead of torch's default")

    def rank_batch_size(self, world_size: int) -> int:
        """Each rank's share of the global ``batch_size`` on ``world_size`` ranks; an :class:`InputError` when
        it does not divide. So the optimiser sees the same batches, steps and learning rates on any number of
        GPUs: the paper's lr belongs to its global batch of 8 and needs no scaling."""
        if self.batch_size % world_size:
            raise InputError(
                f"loop.batch_size: {self.batch_size} is the global batch (summed over the ranks) and does not divide "
                f"among {world_size} ranks; use a multiple of {world_size}"
            )
        return self.batch_size // world_size

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate of 0-based optimiser step ``step`` (see :func:`~fsdino.training.schedule.learning_rate`)."""
        total = self.epochs * steps_per_epoch
        return learning_rate(
            self.lr, step, total, schedule=self.schedule, warmup_steps=self.warmup_steps, power=self.power
        )
