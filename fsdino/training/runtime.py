"""Where training runs: device, mixed precision, and torchrun/DDP process groups (only rank 0 writes)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from tqdm import tqdm

from fsdino.errors import InputError
from fsdino.progress import progress_disabled

if TYPE_CHECKING:
    from fsdino.training.config import AmpMode

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """The process's place in a (possibly distributed) run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        """Wait for every rank (NCCL is told this rank's GPU, so it does not guess one)."""
        if not self.distributed:
            return
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            dist.barrier(device_ids=[index])
        else:
            dist.barrier()

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.all_sum(value) / self.world_size if self.distributed else value

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (a copy), on every rank; ``value`` itself in one process."""
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def gather_lists(self, items: Sequence[T]) -> list[T]:
        """Every rank's ``items`` concatenated in rank order, on every rank (small picklable lists: kept
        overlays, per-batch sums). ``list(items)`` in one process."""
        if not self.distributed:
            return list(items)
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, list(items))
        return [item for part in gathered for item in part]

    def gather_to_main(self, value: T) -> list[T] | None:
        """Every rank's ``value`` in rank order on rank 0, ``None`` on the others (one pickled transfer per
        rank, for results only rank 0 writes). ``[value]`` in one process."""
        if not self.distributed:
            return [value]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (e.g. a threshold tuned once); ``value`` in one process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def amp_dtype_for(mode: AmpMode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``mode`` on ``device`` (``None``: full precision).

    * ``off``: full precision everywhere.
    * ``auto`` (the default): bf16 on CUDA (fp16 where bf16 is unsupported), full precision on the CPU
      and any other device.
    * ``bf16``: bf16 on every device, the CPU included (CPU autocast supports it; no grad scaler needed).
    * ``fp16``: fp16 on CUDA only; elsewhere it is an :class:`~fsdino.errors.InputError` (fp16 needs the
      grad scaler, and CPU matmuls gain nothing from it: ask for ``bf16`` or ``off`` instead).
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        if mode == "fp16":
            raise InputError(f"loop.amp: 'fp16' needs a CUDA device, not {device.type!r}; use 'bf16' or 'off'")
        return None
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def runtime(device: str = "auto", amp: AmpMode = "auto") -> Iterator[Runtime]:
    """Set up the run: a process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else one process.

    Under ``torchrun`` no rank returns from entering it before every rank has entered it (an explicit
    barrier), so what a step did before, e.g. rank 0's :func:`components.cli.prepare_work_dir`, is done.

    ``device="auto"`` picks ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    amp_dtype = amp_dtype_for(amp, torch_device)  # before the process group: a bad mode fails at once
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    started = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
        started = True
    place = Runtime(torch_device, rank, world_size, amp_dtype)
    # torch no longer waits for every rank in init_process_group (unless TORCH_DIST_INIT_BARRIER=1, and NCCL
    # connects lazily): this barrier is what holds the ranks until rank 0 prepared the work folders.
    if started:
        place.barrier()
    try:
        yield place
    finally:
        if started:
            dist.destroy_process_group()


def epoch_order(
    num_items: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1, *, shuffle: bool = True
) -> list[int]:
    """The items one rank visits in one epoch: a permutation fixed by (seed, epoch) (or the identity when
    the items are already in random order), split across ranks.

    Every rank gets the same number of items (the order is padded by wrapping around), so that DDP
    ranks take the same number of steps. It depends on nothing else, which makes resume exact.
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(num_items, generator=generator).tolist()
    else:
        order = list(range(num_items))
    per_rank = -(-num_items // world_size)
    padded = order + order[: per_rank * world_size - num_items]
    return padded[rank::world_size]


def chunk(order: list[int], batch_size: int, max_batches: int | None = None) -> list[list[int]]:
    """Split an order into batches, keeping at most ``max_batches``."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches[:max_batches] if max_batches else batches


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    *,
    lr: float | None = None,
    grad_clip: float | None = None,
) -> None:
    """Backward and step, through the grad scaler when fp16 autocast needs one.

    ``lr`` (when given) is set on every parameter group first; ``grad_clip`` clips the global gradient
    norm (after unscaling).
    """
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


#: Seconds between two lines of an epoch bar when stderr is not a terminal (a log file, a Prefect worker).
LOG_INTERVAL_S = 30.0


class EpochBar(tqdm):
    """tqdm for one epoch whose ``set_postfix`` never redraws (the bar redraws on its own interval, with the
    right count) and which, in a log, writes each redraw as one whole line instead of carriage returns."""

    def __init__(self, *args, log_lines: bool = False, **kwargs) -> None:
        self._log_lines = log_lines
        self._last_n: int | None = None  # the count of the last log line (tqdm's __init__ draws the first)
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._log_lines:
            return super().display(msg, pos)
        if msg == "" or (msg is None and self.n == self._last_n):
            return True  # tqdm clearing the line, or closing on the count of the last line
        self._last_n = self.n
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True


def epoch_progress(loader: Iterable, total: int, done: int, description: str, runtime: Runtime) -> EpochBar:
    """A progress bar for one epoch (rank 0 only; off with ``TQDM_DISABLE=1``): live in a terminal; in a log
    (stderr not a terminal) one line every :data:`LOG_INTERVAL_S` seconds with the count reached, and the
    epoch's final line."""
    interactive = sys.stderr.isatty()
    return EpochBar(
        loader, total=total, initial=done, desc=description, disable=not runtime.is_main or progress_disabled(),
        leave=not interactive, mininterval=0.1 if interactive else LOG_INTERVAL_S, log_lines=not interactive,
        file=sys.stderr,
    )  # fmt: skip
