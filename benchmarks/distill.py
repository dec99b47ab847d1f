"""Distillation step (stage 3): cached teacher embeddings versus running the SAM teacher online.

Each case runs the project's own loop, :func:`fsdino.training.distill.distill_stage`, for
``warmup + iterations`` steps on random images (data loading, the targets, the adapter's forward and
backward and the AdamW step all included); a step's time is the gap between two ``on_step`` callbacks.
Cases:

* ``cached/3-blocks``: the student truncated to three DINOv2 blocks, targets read from an on-disk sharded
  cache (:class:`~fsdino.training.teacher_cache.TeacherTargets`, at the stage's grid, in the Dataset, as
  the pipeline reads it);
* ``cached/full-depth``: the same with an untruncated student, to show what the truncation saves;
* ``online/3-blocks``: the teacher runs on each batch, as ``distill_stage`` calls it (under the run's
  autocast: bf16 on GPU).

The cache holds ``batch`` rows that every batch reuses (item ``i`` reads row ``i mod batch``).
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset

from benchmarks.budget import UNLIMITED, Budget
from benchmarks.common import bench_runtime, dtype_of, ratio, skipped
from benchmarks.results import Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import PeakMemory, Timing, release, synchronize
from fsdino.config import EncoderConfig, TeacherConfig
from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.build import build_encoder
from fsdino.models.teacher_builder import build_teacher
from fsdino.training.checkpointing import RunPosition
from fsdino.training.config import LoopConfig
from fsdino.training.distill import TargetFn, WithCachedTargets, distill_stage, online_targets
from fsdino.training.runtime import Runtime
from fsdino.training.teacher_cache import CacheSpec, TeacherTargets, build_shards, write_index


class RandomImages(Dataset):
    """``length`` items cycling over ``rows`` random images: ``{"image": 3×S×S, "index": i mod rows}``,
    plus ``"teacher_image"`` (3×T×T) when ``teacher_size`` is given."""

    def __init__(self, length: int, rows: int, image_size: int, teacher_size: int | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.length, self.rows = length, rows
        self.images = torch.rand(rows, 3, image_size, image_size, generator=generator)
        self.teacher_images = None
        if teacher_size is not None:
            self.teacher_images = torch.rand(rows, 3, teacher_size, teacher_size, generator=generator)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        row = index % self.rows
        item = {"image": self.images[row], "index": row}
        if self.teacher_images is not None:
            item["teacher_image"] = self.teacher_images[row]
        return item


def _same(teacher: torch.nn.Module) -> torch.nn.Module:
    return teacher


class _Cycled:
    """``length`` items over a cache of fewer rows (the items' ``index`` already cycles over them)."""

    def __init__(self, targets: TeacherTargets, length: int) -> None:
        self.targets, self.length = targets, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, row: int) -> torch.Tensor:
        return self.targets[row]


class StepClock:
    """``on_step`` callback that timestamps every finished step (after the device has caught up)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, position: RunPosition) -> None:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def timing(self, warmup: int) -> Timing:
        """Durations of the steps after the first ``warmup`` (``warmup`` ≥ 1: step 1 has no start stamp)."""
        gaps = [after - before for before, after in zip(self.stamps, self.stamps[1:], strict=False)]
        return Timing(warmup=warmup, times_s=tuple(gaps[warmup - 1 :]))


def time_stage(
    name: str, *, size: BenchSize, runtime: Runtime, meter: PeakMemory, blocks: int | None,
    targets: TargetFn | None, data: Dataset, work_dir: Path,
) -> Record:  # fmt: skip
    """Run ``distill_stage`` for ``warmup + iterations`` steps and time its steps."""
    warmup = max(size.warmup, 1)
    steps = warmup + size.iterations
    student = build_encoder(EncoderConfig(name=size.encoder, weights="random"), size.image_size, blocks=blocks)
    adapter = BottleneckAdapter(in_dim=student.embed_dim)
    config = LoopConfig(epochs=1, batch_size=size.distill_batch, checkpoint_every=10**9, max_steps_per_epoch=steps)
    clock = StepClock(runtime.device)
    meter.reset_peak()
    distill_stage(
        student=student, adapter=adapter, data=data, targets=targets, config=config, runtime=runtime,
        checkpoint=work_dir / f"{name.replace('/', '-')}.pt", fingerprint="benchmark", on_step=clock,
    )  # fmt: skip
    params = {"student_blocks": blocks or student.depth, "targets": name.split("/")[0]}
    params |= {"teacher": f"{size.teacher_arch}@{size.teacher_size}"}
    return Record(
        name=name, batch_size=size.distill_batch, image_size=size.image_size, dtype=dtype_of(runtime),
        unit="images/s", timing=clock.timing(warmup), peak_memory_bytes=meter.peak_bytes(),
        memory_kind=meter.kind, params=params,
    )  # fmt: skip


#: The cases, in the order they run (the online one needs the teacher in memory, so it goes first).
CASES = ("online/3-blocks", "cached/3-blocks", "cached/full-depth")


def _skipped(name: str, size: BenchSize, runtime: Runtime) -> Record:
    return skipped(Record(name, size.distill_batch, size.image_size, dtype_of(runtime), "images/s"))


def run(size: BenchSize, device: torch.device, budget: Budget = UNLIMITED) -> SuiteResult:
    """The online case first, then the cached ones; a case not started when ``budget`` is spent is ``skipped``."""
    runtime = bench_runtime(device)
    # no time left: skip all, since building the teacher alone takes a while at paper size
    records = [_skipped(name, size, runtime) for name in CASES] if budget.expired() else _measure(size, runtime, budget)
    throughput = {record.name: record.throughput for record in records}
    summary = {
        "cached_over_online_speedup": ratio(throughput["cached/3-blocks"], throughput["online/3-blocks"]),
        "truncation_speedup": ratio(throughput["cached/3-blocks"], throughput["cached/full-depth"]),
    }
    settings = {"teacher": f"{size.teacher_arch}@{size.teacher_size}", "cache_rows": size.distill_batch}
    settings["loop"] = "distill_stage"
    return SuiteResult(records=records, summary=summary, settings=settings)


def _measure(size: BenchSize, runtime: Runtime, budget: Budget) -> list[Record]:
    """Build the teacher and its cache, then time the :data:`CASES` in order while ``budget`` lasts."""
    device = runtime.device
    batch = size.distill_batch
    length = batch * (max(size.warmup, 1) + size.iterations)
    keys = [f"row{row}" for row in range(batch)]
    teacher_id = f"sam-{size.teacher_arch}-{size.teacher_size}-random"
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="fsdino-bench-distill-") as tmp:
        work_dir = Path(tmp)
        case = partial(time_stage, size=size, runtime=runtime, work_dir=work_dir)
        meter = PeakMemory(device).start()  # the online cases count the teacher's weights
        teacher = build_teacher(TeacherConfig(arch=size.teacher_arch, image_size=size.teacher_size, sha256=None))
        grid = size.image_size // 14
        spec = CacheSpec(teacher_id, (grid,), tuple(keys), shard_images=batch)
        teacher = teacher.to(device)
        build_shards(
            partial(_same, teacher), RandomImages(batch, batch, size.teacher_size), spec, work_dir / "shards",
            shards=range(spec.num_shards), progress=False, batch_size=batch, device=device,
        )  # fmt: skip
        write_index(work_dir / "index.json", work_dir / "shards", spec)
        online_data = RandomImages(length, batch, size.image_size, size.teacher_size)
        targets = online_targets(teacher, runtime)  # under the run's autocast, as the pipeline runs it
        records.append(case("online/3-blocks", meter=meter, blocks=3, targets=targets, data=online_data))
        del teacher, targets
        release(device)
        cache = TeacherTargets(work_dir / "index.json", teacher_id=teacher_id, keys=keys, grid=grid)
        cached_data = WithCachedTargets(RandomImages(length, batch, size.image_size), _Cycled(cache, length))
        for name, blocks in (("cached/3-blocks", 3), ("cached/full-depth", None)):
            if budget.expired():
                records.append(_skipped(name, size, runtime))
                continue
            meter = PeakMemory(device).start()
            records.append(case(name, meter=meter, blocks=blocks, targets=None, data=cached_data))
            release(device)
    return records
