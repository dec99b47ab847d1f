"""Hyper-parameters of the training loops (pydantic; the pipeline fills them from ``params.yaml``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fsdino.training.runtime import AmpMode


class LoopConfig(BaseModel):
    """What every loop shares. Defaults are the paper's (§4.1): AdamW, lr 1e-3, batch 8."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(default=200, ge=1, description="steps between training checkpoints")
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap for CPU demos")
    num_workers: int = Field(default=0, ge=0)
    amp: AmpMode = "auto"
    device: str = "auto"
