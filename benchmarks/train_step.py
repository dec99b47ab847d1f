"""Episodic training step (1-shot): episodes/s and peak memory, with and without speed-ups.

A step is the body of :func:`fsdino.training.episodic.train_episodic`'s loop on device-resident random
episodes: forward under the runtime's autocast, :func:`fsdino.losses.fsdino_loss`, ``zero_grad``,
backward, AdamW step (data loading is left out: it is the same for every variant). Variants:

* ``eager``: what ``train_episodic`` does today (``torch.optim.AdamW`` with its default implementation);
* ``channels-last``: model and query images in ``torch.channels_last``;
* ``fused-adamw``: ``AdamW(fused=True)``;
* ``compile``: ``torch.compile`` of the whole model (compilation happens in the warm-up steps; the
  first step's time is recorded as ``first_step_s``);
* ``all``: the three together.

A variant this torch build or device cannot run is recorded as ``unsupported`` with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.budget import SKIPPED_NOTE, UNLIMITED, Budget
from benchmarks.common import bench_runtime, best, dtype_of, episode_inputs, ratio
from benchmarks.inference import build_model
from benchmarks.results import Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import PeakMemory, measure, release, synchronize
from fsdino.losses import IGNORE_INDEX, fsdino_loss
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import Runtime

VARIANT = "full"
SHOTS = 1
#: Seconds a ``torch.compile`` variant is expected to need at least (compiling forward and backward of the
#: full model takes a minute or more); one is not started with less left of the budget.
COMPILE_RESERVE_S = 120.0


@dataclass(frozen=True)
class StepOptions:
    """Which speed-ups a training step uses."""

    compile: bool = False
    channels_last: bool = False
    fused_adamw: bool = False


OPTIONS: dict[str, StepOptions] = {
    "eager": StepOptions(),
    "channels-last": StepOptions(channels_last=True),
    "fused-adamw": StepOptions(fused_adamw=True),
    "compile": StepOptions(compile=True),
    "all": StepOptions(compile=True, channels_last=True, fused_adamw=True),
}


def query_targets(batch: int, image_size: int, device: torch.device) -> torch.Tensor:
    """B×S×S query masks: a foreground square, background, and an ignored (255) border row."""
    target = torch.zeros(batch, image_size, image_size, dtype=torch.long)
    target[:, image_size // 4 : image_size // 2, image_size // 4 : image_size // 2] = 1
    target[:, 0] = IGNORE_INDEX
    return target.to(device)


class UnsupportedError(Exception):
    """A speed-up this device or torch build cannot use."""


def _optimizer(parameters: list[torch.nn.Parameter], fused: bool) -> torch.optim.Optimizer:
    defaults = LoopConfig()
    if not fused:
        return torch.optim.AdamW(parameters, lr=defaults.lr, weight_decay=defaults.weight_decay)
    try:
        return torch.optim.AdamW(parameters, lr=defaults.lr, weight_decay=defaults.weight_decay, fused=True)
    except (RuntimeError, ValueError) as error:
        raise UnsupportedError(f"fused AdamW: {str(error).splitlines()[0]}") from error


def measure_variant(name: str, options: StepOptions, size: BenchSize, runtime: Runtime) -> Record:
    """Build a fresh model and optimizer, then time training steps with ``options``."""
    device = runtime.device
    meter = PeakMemory(device).start()
    model = build_model(VARIANT, size).to(device).train()
    query, support, masks = episode_inputs(size.train_batch, SHOTS, size.image_size, device)
    target = query_targets(size.train_batch, size.image_size, device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
        query = query.contiguous(memory_format=torch.channels_last)
    optimizer = _optimizer(model.trainable_parameters(), options.fused_adamw)
    forward = torch.compile(model) if options.compile else model

    def step() -> None:
        with runtime.autocast():
            output = forward(query, support, masks)
        prior = None if output.prior_logits is None else output.prior_logits.float()
        loss = fsdino_loss(output.mask_logits.float(), prior, target).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    meter.reset_peak()
    start = time.perf_counter()
    step()
    synchronize(device)
    first_step_s = time.perf_counter() - start
    warmup = max(size.warmup - 1, 1 if options.compile else 0)  # compile may specialise again on step 2
    timing = measure(step, device, warmup=warmup, iterations=size.iterations)
    params: dict[str, Any] = {"model": VARIANT, "shots": SHOTS, "first_step_s": first_step_s}
    params |= {"compile": options.compile, "channels_last": options.channels_last, "fused_adamw": options.fused_adamw}
    record = Record(
        name=name, batch_size=size.train_batch, image_size=size.image_size, dtype=dtype_of(runtime),
        unit="episodes/s", timing=timing, peak_memory_bytes=meter.peak_bytes(), memory_kind=meter.kind,
        params=params,
    )  # fmt: skip
    return record


def _failed(name: str, size: BenchSize, runtime: Runtime, status: str, note: str) -> Record:
    return Record(
        name=name, batch_size=size.train_batch, image_size=size.image_size, dtype=dtype_of(runtime),
        unit="episodes/s", status=status, params={"model": VARIANT, "shots": SHOTS}, note=note,
    )  # fmt: skip


def run(size: BenchSize, device: torch.device, budget: Budget = UNLIMITED) -> SuiteResult:
    """Every variant of :data:`OPTIONS` in turn (the compiled ones last); a variant not started when ``budget``
    is spent (a compiled one: when less than :data:`COMPILE_RESERVE_S` is left) is ``skipped``."""
    runtime = bench_runtime(device)
    records: list[Record] = []
    for name, options in OPTIONS.items():
        if budget.expired() or (options.compile and size.try_compile and not budget.allows(COMPILE_RESERVE_S)):
            records.append(_failed(name, size, runtime, "skipped", SKIPPED_NOTE))
            continue
        if options.compile and not size.try_compile:
            records.append(_failed(name, size, runtime, "skipped", f"torch.compile is off at size {size.name!r}"))
            continue
        try:
            records.append(measure_variant(name, options, size, runtime))
        except UnsupportedError as error:
            records.append(_failed(name, size, runtime, "unsupported", str(error)))
        except torch.OutOfMemoryError as error:
            records.append(_failed(name, size, runtime, "oom", str(error).splitlines()[0]))
        except Exception as error:  # a compiler failure must not lose the other variants
            records.append(_failed(name, size, runtime, "error", f"{type(error).__name__}: {error}"[:500]))
        torch._dynamo.reset()
        release(device)
    eager = next(record for record in records if record.name == "eager")
    fastest = best(records)
    summary = {
        "fastest": None if fastest is None else fastest.name,
        "fastest_over_eager_speedup": ratio(fastest.throughput if fastest else None, eager.throughput),
        **{f"{r.name}_over_eager_speedup": ratio(r.throughput, eager.throughput) for r in records if r is not eager},
    }
    return SuiteResult(records=records, summary=summary, settings={"variant": VARIANT, "shots": SHOTS})
