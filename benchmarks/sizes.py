"""Benchmark sizes as data: which models, resolutions, batches and repeat counts a run uses.

``paper`` is what the issue asks for on a GPU (518 px DINOv2-B, SAM-H teacher at 1024 px, DINOv2-L +
SAM-H baseline). ``cpu`` uses the demo profile's FS-DINO (``vit_small_patch14_dinov2`` at 112 px,
hard-coded here from ``params.yaml``'s ``model`` section so that a benchmark never depends on which
profile is rendered) against references scaled down by the same factor: each reference model one size
smaller and its resolution ×112/518 (SAM 1024 → 224 px). ``tiny`` is for the tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fsdino.config import EncoderName


@dataclass(frozen=True)
class BenchSize:
    """Everything that changes between a GPU run, a CPU run and a test.

    Attributes:
        name: registry key.
        image_size: FS-DINO's square input size (a multiple of 14).
        encoder: FS-DINO's frozen DINOv2.
        baseline_encoder: the dual-model baseline's DINOv2 (run at ``image_size``).
        baseline_sam_arch: the baseline's SAM image encoder (``fsdino.models.teacher.TEACHER_ARCHS``).
        baseline_sam_size: its input size (a multiple of 16).
        teacher_arch: the distillation teacher's SAM image encoder.
        teacher_size: its input size.
        shots: K values of the inference benchmark.
        batch_sizes: batch sweep, ascending; a sweep stops at OOM or when throughput saturates.
        warmup: untimed iterations before timing.
        iterations: timed iterations (the median is reported).
        caching_queries: queries segmented against one support set.
        caching_batch: queries per forward pass in the caching benchmark.
        distill_batch: images per distillation step.
        train_batch: episodes per training step.
        try_compile: whether the training-step suite tries ``torch.compile`` by default (off on the CPU:
            inductor compiles for minutes there; ``--compile`` turns it on).
    """

    name: str
    image_size: int
    encoder: EncoderName
    baseline_encoder: EncoderName
    baseline_sam_arch: str
    baseline_sam_size: int
    teacher_arch: str
    teacher_size: int
    shots: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    warmup: int
    iterations: int
    caching_queries: int
    caching_batch: int
    distill_batch: int
    train_batch: int
    try_compile: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SIZES: dict[str, BenchSize] = {
    "paper": BenchSize(
        name="paper",
        image_size=518,
        encoder="vit_base_patch14_dinov2",
        baseline_encoder="vit_large_patch14_dinov2",
        baseline_sam_arch="vit_h",
        baseline_sam_size=1024,
        teacher_arch="vit_h",
        teacher_size=1024,
        shots=(1, 5),
        batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128),
        warmup=3,
        iterations=10,
        caching_queries=1000,
        caching_batch=16,
        distill_batch=8,
        train_batch=8,
        try_compile=True,
    ),
    "cpu": BenchSize(
        name="cpu",
        image_size=112,
        encoder="vit_small_patch14_dinov2",
        baseline_encoder="vit_base_patch14_dinov2",
        baseline_sam_arch="vit_b",
        baseline_sam_size=224,
        teacher_arch="vit_b",
        teacher_size=224,
        shots=(1, 5),
        batch_sizes=(1, 4),
        warmup=1,
        iterations=5,
        caching_queries=64,
        caching_batch=8,
        distill_batch=8,
        train_batch=8,
        try_compile=False,
    ),
    "tiny": BenchSize(
        name="tiny",
        image_size=42,
        encoder="vit_small_patch14_dinov2",
        baseline_encoder="vit_small_patch14_dinov2",
        baseline_sam_arch="tiny",
        baseline_sam_size=32,
        teacher_arch="tiny",
        teacher_size=32,
        shots=(1, 2),
        batch_sizes=(1, 2),
        warmup=0,
        iterations=2,
        caching_queries=4,
        caching_batch=2,
        distill_batch=2,
        train_batch=2,
        try_compile=False,
    ),
}
