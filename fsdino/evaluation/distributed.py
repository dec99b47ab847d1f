"""Evaluation over the ranks of a ``torchrun`` launch: each rank scores its share of the batches, then the
counts are summed so that every rank holds the one-process metric.

The split is by whole batches (:func:`fsdino.data.dataset.make_loader` with ``rank``/``world_size``), so each
prediction is the one a single process makes. The per-class intersections, unions (float64 sums of
integer pixel counts, exact below 2⁵³) and episode counts are then summed with one all-reduce, and the
sum of integers does not depend on the order: mIoU and FB-IoU equal the one-process values exactly.
"""

from __future__ import annotations

import torch

from fsdino.evaluation.metrics import SegmentationMeter
from fsdino.training.runtime import Runtime


def reduce_meter(meter: SegmentationMeter, runtime: Runtime) -> SegmentationMeter:
    """Sum every rank's ``meter`` (same classes on every rank) into ``meter`` itself, on every rank.

    One all-reduce of a C×5 float64 tensor: the 4 counts of each class and its episode count. A no-op in
    one process.
    """
    if not runtime.distributed:
        return meter
    rows = [[*meter.sums[c], float(meter.episodes[c])] for c in meter.class_ids]
    counts = torch.tensor(rows, dtype=torch.float64).reshape(len(meter.class_ids), 5).to(runtime.device)
    for row, class_id in zip(runtime.all_sum(counts).cpu().numpy(), meter.class_ids, strict=True):
        meter.sums[class_id] = row[:4].copy()
        meter.episodes[class_id] = int(row[4])
    return meter
