"""Episodic training of the segmenter for one fold and shot (paper §3.4.3, §4.1).

DINOv2 stays frozen; the adapter (from distillation), the prompt generator and the decoder (from SAM)
train with AdamW on Dice + BCE of the prior and final masks. After every epoch the model is validated
on a fixed subset of the fold's novel-class test episodes; ``last.pt`` and ``best.pt`` (highest val
mIoU) are FS-DINO checkpoints with the config and metrics embedded, ``state.pt`` the training state that
makes a resume exact. Each epoch's episodes and augmentations depend only on (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from fsdino.checkpoints import check_state_matches, save_checkpoint, segmenter_state
from fsdino.config import ModelConfig
from fsdino.evaluation.engine import support_foreground
from fsdino.losses import fsdino_loss
from fsdino.models.fsdino import FSDINO
from fsdino.training import speedups
from fsdino.training.checkpointing import RunPosition, load_training_state, save_training_state
from fsdino.training.config import LoopConfig
from fsdino.training.metric_window import MetricWindow
from fsdino.training.runtime import Runtime, chunk, epoch_order, epoch_progress, optimizer_step

#: epoch → the training EpisodeDataset of that epoch.
EpisodesFn = Callable[[int], Dataset]
#: model → validation metrics (``miou``, ``fb_iou``).
ValidateFn = Callable[[FSDINO], dict[str, float]]
LogFn = Callable[[dict[str, float], int], None]


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    from fsdino.data.dataset import collate_episodes

    return collate_episodes(items)


def _restore(model: FSDINO, states: dict[str, dict[str, torch.Tensor]], source: Path) -> None:
    check_state_matches(segmenter_state(model), states["segmenter"], source)
    model.load_state_dict(states["segmenter"], strict=False)


def train_episodic(
    *,
    model: FSDINO,
    model_config: ModelConfig,
    episodes: EpisodesFn,
    config: LoopConfig,
    runtime: Runtime,
    work_dir: Path,
    fingerprint: str,
    validate: ValidateFn | None = None,
    metadata: dict[str, Any] | None = None,
    log: LogFn | None = None,
    on_step: Callable[[RunPosition], None] | None = None,
) -> RunPosition:
    """Train ``model`` in place; resumes exactly from ``work_dir/state.pt`` when it exists.

    Returns the final position; its ``history`` rows hold ``train_loss``, ``train_loss_final``,
    ``train_loss_prior`` (under DDP: the mean over the ranks) and, with ``validate``, ``val_miou`` and
    ``val_fb_iou`` per epoch. ``validate`` is called on every rank with the unwrapped model and must return
    the same scores on each (the pipeline's scores its share of the episodes and sums the counts over the
    ranks, ``components/train.py``), so that all ranks agree on the best epoch.
    """
    device = runtime.device
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / "state.pt"
    model.to(device)
    speedups.to_channels_last(model, config)  # before DDP; the speed-ups are off by default
    trained: torch.nn.Module = model
    if runtime.distributed:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    trained = speedups.compiled(trained, config)
    optimizer = speedups.adamw(model.trainable_parameters(), config)
    scaler = torch.amp.GradScaler(device.type) if runtime.amp_dtype == torch.float16 else None
    position = RunPosition()
    if state_path.is_file():
        states, position = load_training_state(state_path, optimizer, fingerprint, scaler)
        _restore(model, states, state_path)

    def save_state() -> None:
        if runtime.is_main:
            states = {"segmenter": segmenter_state(model)}
            save_training_state(state_path, states, optimizer, position, fingerprint, scaler)

    while position.epoch < config.epochs:
        model.train()
        data = episodes(position.epoch)
        order = epoch_order(len(data), config.seed, position.epoch, runtime.rank, runtime.world_size, shuffle=False)
        batches = chunk(order, config.rank_batch_size(runtime.world_size), config.max_steps_per_epoch)
        loader = DataLoader(
            data, batch_sampler=batches[position.step :], num_workers=config.num_workers, collate_fn=_collate,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        description = f"train epoch {position.epoch + 1}/{config.epochs}"
        progress = epoch_progress(loader, len(batches), position.step, description, runtime)
        window = MetricWindow(config.log_every)  # the tracker gets window means; the epoch row below
        for batch in progress:
            with runtime.autocast():
                output = trained(
                    speedups.input_format(batch["query_image"].to(device, non_blocking=True), config),
                    batch["support_images"].to(device, non_blocking=True),
                    support_foreground(batch["support_masks"]).to(device, non_blocking=True),
                )
            terms = fsdino_loss(output.mask_logits.float(), _float(output.prior_logits), batch["query_mask"].to(device))
            optimizer_step(
                terms.total,
                optimizer,
                scaler,
                lr=config.lr_at(position.global_step, len(batches)),
                grad_clip=config.grad_clip,
            )
            values = {"train_loss": terms.total.item(), "train_loss_final": terms.final.item()}
            values["train_loss_prior"] = terms.prior.item()
            position.add(values)
            progress.set_postfix(loss=f"{values['train_loss']:.3f}")
            means = window.add(values, position.global_step)
            if log is not None and runtime.is_main and means is not None:
                log(means, position.global_step)
            if position.global_step % config.checkpoint_every == 0:
                save_state()
            if on_step is not None:
                on_step(position)
        model.eval()
        _average_over_ranks(position, runtime)
        scores = {}
        if validate is not None:  # on every rank: a rank-aware validate splits the episodes and sums
            metrics = validate(model)
            scores = {"val_miou": metrics["miou"], "val_fb_iou": metrics["fb_iou"]}
        row = position.close_epoch(scores)
        if log is not None and runtime.is_main:
            log({k: v for k, v in row.items() if k != "epoch"}, position.global_step)
        if runtime.is_main:
            score = row.get("val_miou", -row["train_loss"] if "train_loss" in row else 0.0)
            extra = {**(metadata or {}), **{k: float(v) for k, v in row.items()}}
            save_checkpoint(work_dir / "last.pt", model, model_config, extra)
            if position.best_score is None or score > position.best_score:
                position.best_score = float(score)
                save_checkpoint(work_dir / "best.pt", model, model_config, extra)
        save_state()
        runtime.barrier()
    model.eval()
    return position


def _average_over_ranks(position: RunPosition, runtime: Runtime) -> None:
    """Under DDP, replace the epoch's running sums by their mean over the ranks, so that every rank's
    history (and rank 0's choice of ``best.pt`` without validation) describes all the ranks' episodes.

    Every rank takes the same number of steps, so the mean of the per-rank sums over the step count is
    the mean of the per-rank epoch means.
    """
    if not runtime.distributed or not position.sums:
        return
    names = sorted(position.sums)
    sums = torch.tensor([position.sums[name] for name in names], dtype=torch.float64, device=runtime.device)
    position.sums = dict(zip(names, runtime.all_reduce_mean(sums).tolist(), strict=True))


def _float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()
