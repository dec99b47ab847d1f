"""Coarse-to-fine cross-model distillation (paper §3.3): the adapter learns SAM's embeddings.

The student is the first three DINOv2 blocks (frozen; the others are never computed) plus the bottleneck
adapter, the only part that trains. The loss is the MSE between the adapter's output and the teacher's
embedding brought to the student's grid (:func:`fsdino.models.teacher.to_student_grid`, area
interpolation). A stage runs at one resolution; the pipeline chains 126 → 252 → 518 px, each stage
starting from the previous stage's adapter.

Cached targets (:class:`WithCachedTargets`) are read by the Dataset, so in the loader's workers, already
pooled to the stage's grid; batches arrive pinned and are copied to the GPU without blocking. The loader
keeps its workers across epochs (one ``DataLoader`` whose batch list changes per epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.teacher import SamTeacher, to_student_grid
from fsdino.training import speedups
from fsdino.training.checkpointing import RunPosition, load_training_state, save_training_state
from fsdino.training.config import LoopConfig
from fsdino.training.metric_window import MetricWindow
from fsdino.training.runtime import Runtime, chunk, epoch_order, epoch_progress, optimizer_step
from fsdino.training.teacher_cache import TeacherTargets

#: Maps a batch and the student's grid side to the teacher targets B×256×grid×grid.
TargetFn = Callable[[dict, int], torch.Tensor]
#: Receives metrics and the global step (e.g. to log them to MLflow).
LogFn = Callable[[dict[str, float], int], None]


class WithCachedTargets(Dataset):
    """Adds the cached teacher target of each image (``target``: 256×g×g fp16, the stage's grid) to the
    student's items (which carry their manifest row as ``index``); runs in the loader's workers."""

    def __init__(self, student_data: Dataset, targets: TeacherTargets) -> None:
        if len(student_data) != len(targets):
            raise ValueError(f"{len(student_data)} images but {len(targets)} cached targets")
        self.student_data, self.targets = student_data, targets

    def __len__(self) -> int:
        return len(self.student_data)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.student_data[index])
        item["target"] = self.targets[item["index"]]
        return item


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


class _EpochBatches(Sampler[list[int]]):
    """The batch list of the current epoch; replaced per epoch, so one loader keeps its workers."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(data: Dataset, batches: Sampler | list, num_workers: int, device: torch.device) -> DataLoader:
    """A loader over fixed batches: workers kept between epochs, pinned batches for a CUDA device."""
    return DataLoader(
        data, batch_sampler=batches, num_workers=num_workers, pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )  # fmt: skip


def batch_targets(batch: dict, grid: int, targets: TargetFn | None, device: torch.device) -> torch.Tensor:
    """The batch's teacher targets on ``device`` as float32: cached ones from the batch (``targets`` is
    ``None``), else computed by ``targets``."""
    if targets is None:
        target = batch["target"].to(device, non_blocking=True).float()
        if target.shape[-1] != grid:
            raise ValueError(f"cached targets are {target.shape[-1]}² cells, the student's grid is {grid}²")
        return target
    return targets(batch, grid).to(device)


def distill_stage(
    *,
    student: DinoV2Encoder,
    adapter: BottleneckAdapter,
    data: Dataset,
    targets: TargetFn | None,
    config: LoopConfig,
    runtime: Runtime,
    checkpoint: Path,
    fingerprint: str,
    log: LogFn | None = None,
    on_step: Callable[[RunPosition], None] | None = None,
    stats: dict[str, float] | None = None,
) -> RunPosition:
    """Train the adapter for one stage; resumes exactly from ``checkpoint`` when it exists.

    Args:
        student: the frozen 3-block DINOv2 encoder.
        adapter: trained in place.
        data: items ``{"image": 3×S×S, "index": int, …}`` at the stage's resolution, with ``"target"``
            (256×g×g) when the targets are cached (:class:`WithCachedTargets`).
        targets: ``None`` for targets in the batch, or a function computing them (:func:`online_targets`).
        config: loop hyper-parameters; the batch order depends only on (seed, epoch).
        runtime: device, AMP and DDP rank; only rank 0 writes checkpoints.
        checkpoint: training-state file, written every ``checkpoint_every`` steps and after each epoch.
        fingerprint: identifies the configuration; a checkpoint of another one is refused.
        log: per-step metrics sink.
        on_step: called after every step (tests use it to interrupt a run).
        stats: when given, receives ``wait_s`` (time the main thread waited for batches and their
            targets) and ``steps``, summed over the run.

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
    epoch_batches = _EpochBatches()
    loader = make_loader(data, epoch_batches, config.num_workers, device)
    stats = stats if stats is not None else {}
    while position.epoch < config.epochs:
        order = epoch_order(len(data), config.seed, position.epoch, runtime.rank, runtime.world_size)
        batches = chunk(order, config.rank_batch_size(runtime.world_size), config.max_steps_per_epoch)
        epoch_batches.batches = batches[position.step :]
        description = f"distill epoch {position.epoch + 1}/{config.epochs}"
        progress = epoch_progress(loader, len(batches), position.step, description, runtime)
        window = MetricWindow(config.log_every)  # the tracker gets window means; the epoch row below
        for batch in _timed(progress, stats):
            with runtime.autocast():
                image = batch["image"].to(device, non_blocking=True)
                prediction = trained(speedups.input_format(student(image).layer3, config))
            started = time.perf_counter()
            target = batch_targets(batch, prediction.shape[-1], targets, device)
            stats["wait_s"] = stats.get("wait_s", 0.0) + time.perf_counter() - started
            loss = F.mse_loss(prediction.float(), target)
            optimizer_step(
                loss, optimizer, scaler, lr=config.lr_at(position.global_step, len(batches)), grad_clip=config.grad_clip
            )
            position.add({"loss": loss.item()})
            progress.set_postfix(mse=f"{loss.item():.4f}")
            means = window.add({"distill_loss": loss.item()}, position.global_step)
            if log is not None and runtime.is_main and means is not None:
                log(means, position.global_step)
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


def _timed(batches, stats: dict[str, float]):
    """Yield from ``batches``, adding the time spent waiting for each to ``stats["wait_s"]``."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        stats["wait_s"] = stats.get("wait_s", 0.0) + time.perf_counter() - started
        stats["steps"] = stats.get("steps", 0) + 1
        yield batch


@torch.no_grad()
def evaluate_mse(
    *, student: DinoV2Encoder, adapter: BottleneckAdapter, data: Dataset, targets: TargetFn | None,
    runtime: Runtime, batch_size: int = 8, num_workers: int = 0,
) -> float:  # fmt: skip
    """Mean squared error of the adapter against the teacher over ``data`` (fixed order).

    Under ``torchrun`` rank r scores batches r, r+W, … of the one-process batching and every rank gets the
    per-batch sums of all ranks, added in batch order: the one-process value exactly, on every rank.
    """
    adapter.eval().to(runtime.device)
    student.to(runtime.device)
    plan = list(enumerate(chunk(list(range(len(data))), batch_size)))[runtime.rank :: runtime.world_size]
    loader = make_loader(data, [batch for _, batch in plan], num_workers, runtime.device)
    sums: list[tuple[int, float, int]] = []
    for (number, _), batch in zip(plan, loader, strict=True):
        with runtime.autocast():
            prediction = adapter(student(batch["image"].to(runtime.device, non_blocking=True)).layer3)
        target = batch_targets(batch, prediction.shape[-1], targets, runtime.device)
        sums.append((number, F.mse_loss(prediction.float(), target, reduction="sum").item(), target.numel()))
    total, count = 0.0, 0
    for _, error, size in sorted(runtime.gather_lists(sums)):
        total += error
        count += size
    return total / count if count else math.nan
