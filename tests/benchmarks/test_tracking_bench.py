"""The tracking benchmark against a real ``mlflow server``: both modes run, and the stored points show what
each sends (one per step, or one per window)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import tracking
from benchmarks.sizes import SIZES

pytestmark = pytest.mark.slow


def test_the_window_stores_one_point_per_window(monkeypatch):
    monkeypatch.setattr(tracking, "STEPS", 100)
    result = tracking.run(SIZES["cpu"], torch.device("cpu"))
    stored = {record.name: record.params["points_stored_per_metric"] for record in result.records}
    assert stored == {"every_step_sync": 100, "window_async": 100 // tracking.LOG_EVERY}
    assert result.summary["paper_coco_calls_after"] == tracking.PAPER_STEPS // tracking.LOG_EVERY
