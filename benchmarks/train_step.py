"""Episodic training step (1-shot): episodes/s and peak memory, with and without speed-ups.

A step is the body of :func:`fsdino.training.episodic.train_episodic`'s loop on device-resident random
episodes: forward under the runtime's autocast, :func:`fsdino.losses.fsdino_loss`, ``zero_grad``,
backward, AdamW step (data loading is left out: it is the same for every variant). The speed-ups are the
loop's own options (``loop.channels_last``, ``loop.fused_adamw``, ``loop.compile``), applied by the same
functions the loop calls (:mod:`fsdino.training.speedups`), so what is measured is what a config turns on:

* ``eager``: the loop's defaults (all off; ``torch.optim.AdamW`` with its default implementation);
* ``channels-last``: model weights and query images in ``torch.channels_last``;
* ``fused-adamw``: ``AdamW(fused=True)``;
* ``compile``: ``torch.compile`` of the whole model (compilation happens in the warm-up steps; the
  first step's time is recorded as ``first_step_s``);
* ``all``: the three together.

A variant this torch build or device cannot run is recorded as ``error`` with the message.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.budget import SKIPPED_NOTE, UNLIMITED, Budget
from benchmarks.common import bench_runtime, best, dtype_of, episode_inputs, ratio
from benchmarks.inference import build_model
from benchmarks.results import Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import PeakMemory, measure, release, synchronize
from fsdino.losses import IGNORE_INDEX, fsdino_loss
from fsdino.training import speedups
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import Runtime

VARIANT = "full"
SHOTS = 1
#: Seconds a ``torch.compile`` variant is expected to need at least (compiling forward and backward of the
#: full model takes a minute or more); one is not started with less left of the budget.
COMPILE_RESERVE_S = 120.0


#: Variant → the loop options it turns on (``fsdino.training.config.LoopConfig`` fields).
OPTIONS: dict[str, dict[str, bool]] = {
    "eager": {},
    "channels-last": {"channels_last": True},
    "fused-adamw": {"fused_adamw": True},
    "compile": {"compile": True},
    "all": {"compile": True, "channels_last": True, "fused_adamw": True},
}


def query_targets(batch: int, image_size: int, device: torch.device) -> torch.Tensor:
    """B×S×S query masks: a foreground square, background, and an ignored (255) border row."""
    target = torch.zeros(batch, image_size, image_size, dtype=torch.long)
    target[:, image_size // 4 : image_size // 2, image_size // 4 : image_size // 2] = 1
    target[:, 0] = IGNORE_INDEX
    return target.to(device)


def measure_variant(name: str, options: dict[str, bool], size: BenchSize, runtime: Runtime) -> Record:
    """Build a fresh model and optimizer, then time training steps with the loop ``options``."""
    device = runtime.device
    config = LoopConfig(**options)
    meter = PeakMemory(device).start()
    model = build_model(VARIANT, size).to(device).train()
    query, support, masks = episode_inputs(size.train_batch, SHOTS, size.image_size, device)
    target = query_targets(size.train_batch, size.image_size, device)
    speedups.to_channels_last(model, config)
    query = speedups.input_format(query, config)
    optimizer = speedups.adamw(model.trainable_parameters(), config)
    forward = speedups.compiled(model, config)

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
    warmup = max(size.warmup - 1, 1 if config.compile else 0)  # compile may specialise again on step 2
    timing = measure(step, device, warmup=warmup, iterations=size.iterations)
    params: dict[str, Any] = {"model": VARIANT, "shots": SHOTS, "first_step_s": first_step_s}
    params |= {key: getattr(config, key) for key in ("compile", "channels_last", "fused_adamw")}
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
        compiles = options.get("compile", False)
        if budget.expired() or (compiles and size.try_compile and not budget.allows(COMPILE_RESERVE_S)):
            records.append(_failed(name, size, runtime, "skipped", SKIPPED_NOTE))
            continue
        if compiles and not size.try_compile:
            records.append(_failed(name, size, runtime, "skipped", f"torch.compile is off at size {size.name!r}"))
            continue
        try:
            records.append(measure_variant(name, options, size, runtime))
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
