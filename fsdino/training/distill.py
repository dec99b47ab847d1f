"""Coarse-to-fine cross-model distillation (paper §3.3): the adapter learns SAM's embeddings.

The student is the first three DINOv2 blocks (frozen; the others are never computed) plus the bottleneck
adapter, the only part that trains. The loss is the MSE between the adapter's output and the teacher's
embedding brought to the student's grid (:func:`fsdino.models.teacher.to_student_grid`, area
interpolation). A stage runs at one resolution; the pipeline chains 126 → 252 → 518 px, each stage
starting from the previous stage's adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.teacher import SamTeacher, to_student_grid
from fsdino.training import speedups
from fsdino.training.checkpointing import RunPosition, load_training_state, save_training_state
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import Runtime, chunk, epoch_order, epoch_progress, optimizer_step
from fsdino.training.teacher_cache import TeacherCache

#: Maps a batch and the student's grid side to the teacher targets B×256×grid×grid.
TargetFn = Callable[[dict, int], torch.Tensor]
#: Receives metrics and the global step (e.g. to log them to MLflow).
LogFn = Callable[[dict[str, float], int], None]


def cached_targets(cache: TeacherCache) -> TargetFn:
    """Targets read from the on-disk cache by manifest row (``batch["index"]``)."""
    return lambda batch, grid: to_student_grid(cache[batch["index"]], grid)


def online_targets(teacher: SamTeacher, runtime: Runtime) -> TargetFn:
    """Targets computed by running the teacher on ``batch["teacher_image"]`` (its own input size), under the
    run's autocast (bf16 on GPU: SAM-H in fp32 would dominate the step)."""
    teacher = teacher.to(runtime.device)

    def targets(batch: dict, grid: int) -> torch.Tensor:
        with runtime.autocast():
            embeddings = teacher(batch["teacher_image"].to(runtime.device))
        return to_student_grid(embeddings.float(), grid)

    return targets


class WithTeacherImages(Dataset):
    """Adds the teacher's view of each image (``teacher_image``, at the teacher's input size) to the
    student's items, for online distillation. Both datasets must index the same manifest."""

    def __init__(self, student_data: Dataset, teacher_data: Dataset) -> None:
        if len(student_data) != len(teacher_data):
            raise ValueError("student and teacher datasets must have the same length")
        self.student_data, self.teacher_data = student_data, teacher_data

    def __len__(self) -> int:
        return len(self.student_data)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.student_data[index])
        item["teacher_image"] = self.teacher_data[item["index"]]["image"]
        return item


def distill_stage(
    *,
    student: DinoV2Encoder,
    adapter: BottleneckAdapter,
    data: Dataset,
    targets: TargetFn,
    config: LoopConfig,
    runtime: Runtime,
    checkpoint: Path,
    fingerprint: str,
    log: LogFn | None = None,
    on_step: Callable[[RunPosition], None] | None = None,
) -> RunPosition:
    """Train the adapter for one stage; resumes exactly from ``checkpoint`` when it exists.

    Args:
        student: the frozen 3-block DINOv2 encoder.
        adapter: trained in place.
        data: items ``{"image": 3×S×S, "index": int, …}`` at the stage's resolution.
        targets: where the teacher embeddings come from (:func:`cached_targets`, :func:`online_targets`).
        config: loop hyper-parameters; the batch order depends only on (seed, epoch).
        runtime: device, AMP and DDP rank; only rank 0 writes checkpoints.
        checkpoint: training-state file, written every ``checkpoint_every`` steps and after each epoch.
        fingerprint: identifies the configuration; a checkpoint of another one is refused.
        log: per-step metrics sink.
        on_step: called after every step (tests use it to interrupt a run).

    Returns:
        The final run position, whose ``history`` holds the mean loss of every epoch.
    """
    device = runtime.device
    student.to(device)
    adapter.to(device)
    speedups.to_channels_last(adapter, config)  # before DDP; the speed-ups are off by default
    trained: nn.Module = adapter
    if runtime.distributed:
        trained = DistributedDataParallel(adapter, device_ids=[device.index] if device.type == "cuda" else None)
    trained = speedups.compiled(trained, config)
    optimizer = speedups.adamw(adapter.parameters(), config)
    scaler = torch.amp.GradScaler(device.type) if runtime.amp_dtype == torch.float16 else None
    position = RunPosition()
    if checkpoint.is_file():
        states, position = load_training_state(checkpoint, optimizer, fingerprint, scaler)
        adapter.load_state_dict(states["adapter"])

    def save() -> None:
        if runtime.is_main:
            save_training_state(checkpoint, {"adapter": adapter.state_dict()}, optimizer, position, fingerprint, scaler)

    adapter.train()
    while position.epoch < config.epochs:
        order = epoch_order(len(data), config.seed, position.epoch, runtime.rank, runtime.world_size)
        batches = chunk(order, config.batch_size, config.max_steps_per_epoch)
        loader = DataLoader(data, batch_sampler=batches[position.step :], num_workers=config.num_workers)
        description = f"distill epoch {position.epoch + 1}/{config.epochs}"
        progress = epoch_progress(loader, len(batches), position.step, description, runtime)
        for batch in progress:
            with runtime.autocast():
                prediction = trained(speedups.input_format(student(batch["image"].to(device)).layer3, config))
            target = targets(batch, prediction.shape[-1]).to(device)
            loss = F.mse_loss(prediction.float(), target)
            optimizer_step(
                loss, optimizer, scaler, lr=config.lr_at(position.global_step, len(batches)), grad_clip=config.grad_clip
            )
            position.add({"loss": loss.item()})
            progress.set_postfix(mse=f"{loss.item():.4f}")
            if log is not None and runtime.is_main:
                log({"distill_loss": loss.item()}, position.global_step)
            if position.global_step % config.checkpoint_every == 0:
                save()
            if on_step is not None:
                on_step(position)
        mean = runtime.all_reduce_mean(
            torch.tensor(position.sums.get("loss", 0.0) / max(position.step, 1), device=device)
        )
        position.close_epoch({"loss": float(mean)})
        save()
    adapter.eval()
    return position


@torch.no_grad()
def evaluate_mse(
    *, student: DinoV2Encoder, adapter: BottleneckAdapter, data: Dataset, targets: TargetFn, runtime: Runtime,
    batch_size: int = 8,
) -> float:  # fmt: skip
    """Mean squared error of the adapter against the teacher over ``data`` (fixed order)."""
    adapter.eval().to(runtime.device)
    student.to(runtime.device)
    total, count = 0.0, 0
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        with runtime.autocast():
            prediction = adapter(student(batch["image"].to(runtime.device)).layer3)
        target = targets(batch, prediction.shape[-1]).to(runtime.device)
        total += F.mse_loss(prediction.float(), target, reduction="sum").item()
        count += target.numel()
    return total / max(count, 1) if count else math.nan
