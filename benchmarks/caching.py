"""Support caching: segmenting many queries against one support set.

With the cache, the K supports are encoded once (``FSDINO.encode_support``, what
:class:`fsdino.inference.Segmenter` keeps) and every batch of queries runs ``FSDINO.segment`` only.
Without it, every query arrives as its own episode (``FSDINO.forward`` with the support set repeated per
query), so the supports are encoded again for each query. One timed iteration is a pass over all
``size.caching_queries`` queries in batches of ``size.caching_batch`` (the same query batch is reused:
the cost does not depend on pixel values). Both paths must give the same masks; the largest logit
difference on the first batch is recorded as a check.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.budget import UNLIMITED, Budget
from benchmarks.common import bench_runtime, dtype_of, episode_inputs, ratio, skipped
from benchmarks.inference import build_model
from benchmarks.results import Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import PeakMemory, measure, release
from fsdino.models.fsdino import FSDINO
from fsdino.training.runtime import Runtime

VARIANT = "full"


def _batches(size: BenchSize) -> list[int]:
    """Batch sizes covering ``caching_queries`` queries (the last one may be smaller)."""
    full, rest = divmod(size.caching_queries, size.caching_batch)
    return [size.caching_batch] * full + ([rest] if rest else [])


def measure_shots(model: FSDINO, shots: int, size: BenchSize, runtime: Runtime, meter: PeakMemory) -> list[Record]:
    """Queries/s over one pass of all queries, with and without the support cache."""
    query, support, masks = episode_inputs(size.caching_batch, shots, size.image_size, runtime.device)
    support, masks = support[:1], masks[:1]  # one support set: 1×K×3×S×S, 1×K×S×S
    batches = _batches(size)

    def cached() -> torch.Tensor:
        features = model.encode_support(support, masks)
        return torch.cat([model.segment(query[:batch], features).mask_logits for batch in batches])

    def uncached() -> torch.Tensor:
        outputs = []
        for batch in batches:
            repeated = support.expand(batch, -1, -1, -1, -1), masks.expand(batch, -1, -1, -1)
            outputs.append(model(query[:batch], *repeated).mask_logits)
        return torch.cat(outputs)

    records = []
    with torch.no_grad(), runtime.autocast():
        difference = (cached()[: size.caching_batch] - uncached()[: size.caching_batch]).abs().max().item()
        for name, fn in (("cached", cached), ("uncached", uncached)):
            meter.reset_peak()
            timing = measure(fn, runtime.device, warmup=1, iterations=max(2, size.iterations // 3))
            records.append(
                Record(
                    name=f"{VARIANT}/{shots}-shot/{name}",
                    batch_size=size.caching_queries,  # items per timed iteration: throughput is queries/s
                    image_size=size.image_size,
                    dtype=dtype_of(runtime),
                    unit="queries/s",
                    timing=timing,
                    peak_memory_bytes=meter.peak_bytes(),
                    memory_kind=meter.kind,
                    params={
                        "model": VARIANT,
                        "shots": shots,
                        "cache": name == "cached",
                        "forward_batch": size.caching_batch,
                        "max_abs_logit_difference": difference,
                    },
                )
            )
    return records


def _skipped_shots(shots: int, size: BenchSize, runtime: Runtime) -> list[Record]:
    params = {"model": VARIANT, "shots": shots, "forward_batch": size.caching_batch}
    return [
        skipped(Record(f"{VARIANT}/{shots}-shot/{name}", size.caching_queries, size.image_size, dtype_of(runtime),
                       "queries/s", params=params | {"cache": name == "cached"}))
        for name in ("cached", "uncached")
    ]  # fmt: skip


def run(size: BenchSize, device: torch.device, budget: Budget = UNLIMITED) -> SuiteResult:
    """Each K of ``size.shots`` in turn; a K not started when ``budget`` is spent is ``skipped``."""
    runtime = bench_runtime(device)
    meter = PeakMemory(device).start()
    model: FSDINO | None = None  # built for the first K that runs
    records: list[Record] = []
    for shots in size.shots:
        if budget.expired():
            records += _skipped_shots(shots, size, runtime)
            continue
        if model is None:
            model = build_model(VARIANT, size).to(device)
        records += measure_shots(model, shots, size, runtime, meter)
    del model
    release(device)
    summary: dict[str, Any] = {}
    for shots in size.shots:
        by_cache = {r.params["cache"]: r.throughput for r in records if r.params["shots"] == shots}
        summary[f"cache_speedup/{shots}-shot"] = ratio(by_cache.get(True), by_cache.get(False))
    settings = {"variant": VARIANT, "queries": size.caching_queries, "forward_batch": size.caching_batch}
    return SuiteResult(records=records, summary=summary, settings=settings)
