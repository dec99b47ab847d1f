"""Inference throughput and peak memory: FS-DINO (full, compact) versus the dual-model baseline.

Each timed iteration segments a batch of B episodes, each with its own K supports and one query
(``model(query, supports, masks)``, as few-shot evaluation does), so K-shot costs K + 1 DINOv2 passes per
query. Throughput is queries/s. Every model is built inside the memory meter, so its weights count in its
peak, and freed before the next one is built. A batch sweep goes up until out of memory or until
throughput gains less than 5 %; the best batch and batch 1 are compared in the summary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks.baseline import build_dual_model_baseline
from benchmarks.budget import UNLIMITED, Budget
from benchmarks.common import bench_runtime, best, dtype_of, episode_inputs, ratio, skipped, sweep_batches
from benchmarks.results import Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import PeakMemory, measure, release
from fsdino.config import EncoderConfig, ModelConfig
from fsdino.models.build import build_fsdino
from fsdino.training.runtime import Runtime

#: Model name → FS-DINO variant (``baseline`` is the dual-model pipeline).
MODELS: dict[str, str | None] = {"full": "full", "compact": "ba_svp_pcs", "baseline": None}
#: The issue's targets for FS-DINO relative to the baseline.
TARGET_SPEEDUP = 8.0
TARGET_MEMORY_FRACTION = 0.25
#: Shares of the suite's budget: the baseline's encoders cost the most, and without it there is no ratio.
MODEL_WEIGHTS = {"full": 1.0, "compact": 1.0, "baseline": 2.0}


def build_model(name: str, size: BenchSize) -> nn.Module:
    """FS-DINO (``full`` / ``compact``) or the baseline at ``size``, random weights, in eval mode."""
    variant = MODELS[name]
    if variant is None:
        return build_dual_model_baseline(
            dino_name=size.baseline_encoder,
            image_size=size.image_size,
            sam_arch=size.baseline_sam_arch,
            sam_image_size=size.baseline_sam_size,
        )
    config = ModelConfig(
        variant=variant,
        encoder=EncoderConfig(name=size.encoder, weights="random"),
        image_size=size.image_size,
        sam_checkpoint=None,
    )
    return build_fsdino(config, load_sam=False).eval()


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def measure_case(
    model: nn.Module, name: str, shots: int, batch: int, size: BenchSize, runtime: Runtime, meter: PeakMemory
) -> Record:
    """Time ``model`` on B random K-shot episodes; peak memory above the level before the model was built."""
    params = {"model": name, "shots": shots, "parameters": parameter_count(model)}
    meter.reset_peak()
    query, support, masks = episode_inputs(batch, shots, size.image_size, runtime.device)

    def forward() -> None:
        with torch.no_grad(), runtime.autocast():
            model(query, support, masks)

    timing = measure(forward, runtime.device, warmup=size.warmup, iterations=size.iterations)
    return Record(
        name=f"{name}/{shots}-shot/batch-{batch}",
        batch_size=batch,
        image_size=size.image_size,
        dtype=dtype_of(runtime),
        unit="queries/s",
        timing=timing,
        peak_memory_bytes=meter.peak_bytes(),
        memory_kind=meter.kind,
        params=params,
    )


def blank_record(name: str, shots: int, batch: int, size: BenchSize, runtime: Runtime) -> Record:
    """The record of a case that did not run (its ``status`` and ``note`` are filled in by the caller)."""
    params = {"model": name, "shots": shots}
    return Record(
        f"{name}/{shots}-shot/batch-{batch}", batch, size.image_size, dtype_of(runtime), "queries/s", params=params
    )


def sweep(
    model: nn.Module,
    name: str,
    shots: int,
    size: BenchSize,
    runtime: Runtime,
    meter: PeakMemory,
    budget: Budget = UNLIMITED,
) -> list[Record]:
    """Batch sizes in ascending order until out of memory, saturation or the end of ``budget``."""
    return sweep_batches(
        size.batch_sizes,
        lambda batch: measure_case(model, name, shots, batch, size, runtime, meter),
        lambda batch: blank_record(name, shots, batch, size, runtime),
        budget,
    )


def summarize(records: list[Record], shots: tuple[int, ...]) -> dict[str, Any]:
    """Throughput and peak-memory ratios of each FS-DINO model over the baseline, per K."""
    targets = {"speedup_at_least": TARGET_SPEEDUP, "memory_fraction_at_most": TARGET_MEMORY_FRACTION}
    summary: dict[str, Any] = {"targets": targets}
    for k in shots:
        of_k = [record for record in records if record.params["shots"] == k]
        by_model = {name: [record for record in of_k if record.params["model"] == name] for name in MODELS}
        base_one = next((r for r in by_model["baseline"] if r.batch_size == 1), None)
        base_best = best(by_model["baseline"])
        for name in ("full", "compact"):
            one = next((r for r in by_model[name] if r.batch_size == 1), None)
            top = best(by_model[name])
            entry = {
                "batch1_speedup": ratio(_thr(one), _thr(base_one)),
                "batch1_memory_fraction": ratio(_mem(one), _mem(base_one)),
                "best_batch": None if top is None else top.batch_size,
                "baseline_best_batch": None if base_best is None else base_best.batch_size,
                "best_speedup": ratio(_thr(top), _thr(base_best)),
                "best_memory_fraction": ratio(_mem(top), _mem(base_best)),
            }
            for at in ("batch1", "best"):
                entry[f"{at}_meets_targets"] = _meets(entry[f"{at}_speedup"], entry[f"{at}_memory_fraction"])
            summary[f"{name}_vs_baseline/{k}-shot"] = entry
    return summary


def _meets(speedup: float | None, memory_fraction: float | None) -> bool | None:
    if speedup is None or memory_fraction is None:
        return None
    return speedup >= TARGET_SPEEDUP and memory_fraction <= TARGET_MEMORY_FRACTION


def _thr(record: Record | None) -> float | None:
    return None if record is None else record.throughput


def _mem(record: Record | None) -> float | None:
    return None if record is None or record.peak_memory_bytes is None else float(record.peak_memory_bytes)


def run(
    size: BenchSize, device: torch.device, models: tuple[str, ...] = tuple(MODELS), budget: Budget = UNLIMITED
) -> SuiteResult:
    """Sweep every model over ``size.shots`` and ``size.batch_sizes``; one model in memory at a time.

    Models are measured in ``models`` order, each within its :data:`MODEL_WEIGHTS` share of what is left of
    ``budget`` (split evenly over the K values); a case not started when its share is spent is ``skipped``.
    """
    runtime = bench_runtime(device)
    records: list[Record] = []
    for index, name in enumerate(models):
        share = budget.share(name, models[index + 1 :], MODEL_WEIGHTS)
        if share.expired():
            records += [skipped(blank_record(name, k, size.batch_sizes[0], size, runtime)) for k in size.shots]
            continue
        meter = PeakMemory(device).start()
        model = build_model(name, size).to(device)
        for position, shots in enumerate(size.shots):
            later = [f"{k}-shot" for k in size.shots[position + 1 :]]
            records += sweep(model, name, shots, size, runtime, meter, share.share(f"{shots}-shot", later, {}))
        del model
        release(device)
    settings = {"models": {name: MODELS[name] or "dual-model baseline" for name in models}}
    return SuiteResult(records=records, summary=summarize(records, size.shots), settings=settings)
