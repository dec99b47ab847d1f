"""Encoder efficiency: achieved TFLOP/s of the frozen DINOv2 forward, as a fraction of the GPU's peak.

The forward is timm's ``forward_features`` (patch embedding, all blocks, final norm) under the runtime's
autocast, swept over batch sizes. FLOPs are counted analytically (:mod:`benchmarks.flops`, formula in
its docstring) and cross-checked once against :class:`torch.utils.flop_counter.FlopCounterMode`. The
fraction of peak uses the data-sheet dense bf16 peak (:data:`benchmarks.flops.GPU_BF16_PEAK_TFLOPS`,
or ``--peak-tflops``); on the CPU it is ``None``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.budget import UNLIMITED, Budget
from benchmarks.common import bench_runtime, best, dtype_of, sweep_batches
from benchmarks.flops import bf16_peak_tflops, dinov2_forward_flops
from benchmarks.results import Record, SuiteResult, device_name
from benchmarks.sizes import BenchSize
from benchmarks.timing import PeakMemory, measure, release
from fsdino.config import EncoderConfig
from fsdino.models.build import build_encoder
from fsdino.training.runtime import Runtime


def counted_flops(vit: nn.Module, image_size: int, device: torch.device) -> int:
    """FLOPs of one image's forward as FlopCounterMode counts them.

    Fused attention is switched off for the count: the CPU's fused kernel has no FLOP formula registered,
    so its two attention matmuls would go uncounted.
    """
    attentions = [block.attn for block in vit.blocks if hasattr(block.attn, "fused_attn")]
    saved = [attention.fused_attn for attention in attentions]
    try:
        for attention in attentions:
            attention.fused_attn = False
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            vit.forward_features(torch.rand(1, 3, image_size, image_size, device=device))
    finally:
        for attention, fused in zip(attentions, saved, strict=True):
            attention.fused_attn = fused
    return counter.get_total_flops()


def measure_batch(
    vit: nn.Module, batch: int, size: BenchSize, runtime: Runtime, meter: PeakMemory, peak: float | None
) -> Record:
    images = torch.rand(batch, 3, size.image_size, size.image_size, device=runtime.device)

    def forward() -> None:
        with torch.no_grad(), runtime.autocast():
            vit.forward_features(images)

    meter.reset_peak()
    timing = measure(forward, runtime.device, warmup=size.warmup, iterations=size.iterations)
    flops = dinov2_forward_flops(size.encoder, size.image_size, batch)
    achieved = flops / timing.median_s / 1e12
    params = {"encoder": size.encoder, "flops": flops, "achieved_tflops": achieved, "peak_tflops": peak}
    params["fraction_of_peak"] = None if peak is None else achieved / peak
    return Record(
        name=f"{size.encoder}/batch-{batch}", batch_size=batch, image_size=size.image_size,
        dtype=dtype_of(runtime), unit="images/s", timing=timing, peak_memory_bytes=meter.peak_bytes(),
        memory_kind=meter.kind, params=params,
    )  # fmt: skip


def run(
    size: BenchSize, device: torch.device, peak_tflops: float | None = None, budget: Budget = UNLIMITED
) -> SuiteResult:
    """Batch sweep up to saturation, out of memory or the end of ``budget``."""
    runtime = bench_runtime(device)
    peak = peak_tflops or (bf16_peak_tflops(device_name(device)) if device.type == "cuda" else None)
    meter = PeakMemory(device).start()
    vit = build_encoder(EncoderConfig(name=size.encoder, weights="random"), size.image_size).vit.to(device)
    records = sweep_batches(
        size.batch_sizes,
        lambda batch: measure_batch(vit, batch, size, runtime, meter, peak),
        lambda batch: Record(f"{size.encoder}/batch-{batch}", batch, size.image_size, dtype_of(runtime), "images/s"),
        budget,
    )
    analytic = dinov2_forward_flops(size.encoder, size.image_size)
    counted = counted_flops(vit, size.image_size, device)
    release(device)
    top = best(records)
    summary = {
        "best_batch": None if top is None else top.batch_size,
        "achieved_tflops": None if top is None else top.params["achieved_tflops"],
        "peak_tflops": peak,
        "fraction_of_peak": None if top is None else top.params["fraction_of_peak"],
        "flops_per_image_analytic": analytic,
        "flops_per_image_flop_counter": counted,
        "analytic_over_counted": analytic / counted,
    }
    settings = {"encoder": size.encoder, "flop_formula": "see benchmarks/flops.py"}
    return SuiteResult(records=records, summary=summary, settings=settings)
