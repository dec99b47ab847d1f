"""Helpers the suites share: the runtime (device + autocast), random episodes, failure-tolerant cases."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import torch

from benchmarks.budget import SKIPPED_NOTE, UNLIMITED, Budget
from benchmarks.results import Record, dtype_label
from fsdino.training.runtime import Runtime, amp_dtype_for

#: A sweep stops growing the batch once throughput improves by less than this factor.
SATURATION = 1.05


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bench_runtime(device: torch.device) -> Runtime:
    """The project's runtime for one process: bf16 autocast on CUDA, full precision on the CPU."""
    return Runtime(device, amp_dtype=amp_dtype_for("auto", device))


def dtype_of(runtime: Runtime) -> str:
    return dtype_label(runtime.amp_dtype)


def episode_inputs(
    batch: int, shots: int, image_size: int, device: torch.device, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random episodes: query B×3×S×S, supports B×K×3×S×S in [0, 1], support masks B×K×S×S in {0, 1}.

    The masks are a centred square covering a quarter of the image, so every prototype is defined.
    """
    generator = torch.Generator().manual_seed(seed)
    query = torch.rand(batch, 3, image_size, image_size, generator=generator)
    support = torch.rand(batch, shots, 3, image_size, image_size, generator=generator)
    masks = torch.zeros(batch, shots, image_size, image_size)
    low, high = image_size // 4, image_size - image_size // 4
    masks[..., low:high, low:high] = 1.0
    return query.to(device), support.to(device), masks.to(device)


def guarded(case: Callable[[], Record], failed: Callable[[str, str], Record]) -> Record:
    """Run ``case``; an out-of-memory error becomes an ``oom`` record, any other error an ``error`` one."""
    try:
        return case()
    except torch.OutOfMemoryError as error:
        return failed("oom", str(error).splitlines()[0])
    except (RuntimeError, ValueError, NotImplementedError) as error:
        return failed("error", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def best(records: Iterable[Record]) -> Record | None:
    """The record with the highest throughput among those that ran."""
    ran = [record for record in records if record.throughput is not None]
    return max(ran, key=lambda record: record.throughput or 0.0) if ran else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def skipped(record: Record) -> Record:
    """``record`` marked as not started because the budget was spent."""
    return replace(record, status="skipped", note=SKIPPED_NOTE)


def sweep_batches(
    batch_sizes: Iterable[int],
    case: Callable[[int], Record],
    blank: Callable[[int], Record],
    budget: Budget = UNLIMITED,
) -> list[Record]:
    """Run ``case(batch)`` for ascending batch sizes until one fails, throughput saturates or ``budget`` is spent.

    ``blank(batch)`` is the record to fill in (``status`` and ``note``) when a case fails or is skipped.
    """
    records: list[Record] = []
    for batch in batch_sizes:
        if budget.expired():
            records.append(skipped(blank(batch)))
            break
        record = guarded(
            lambda batch=batch: case(batch),
            lambda status, note, batch=batch: replace(blank(batch), status=status, note=note),
        )
        records.append(record)
        previous = records[-2].throughput if len(records) > 1 else None
        if record.throughput is None or (previous and record.throughput < previous * SATURATION):
            break
    return records
