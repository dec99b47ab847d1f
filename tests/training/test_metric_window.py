"""Per-step metrics thinned to window means: the arithmetic, and what the distillation loop hands the tracker."""

from __future__ import annotations

import pytest
import torch

from fsdino.training.distill import WithTeacherImages, distill_stage, online_targets
from fsdino.training.metric_window import MetricWindow
from fsdino.training.runtime import Runtime
from tests.training.test_distill import Images, config, fresh_adapter
from tests.training.test_distill import parts as parts

CPU = Runtime(torch.device("cpu"))


def test_the_window_gives_means_every_n_steps_and_flushes_the_rest():
    window = MetricWindow(3)
    assert [window.add({"loss": float(step)}, step) for step in (1, 2)] == [None, None]
    assert window.add({"loss": 6.0, "other": 1.0}, 3) == {"loss": 3.0, "other": 1.0}  # (1 + 2 + 6) / 3; 1 / 1
    assert window.add({"loss": 4.0}, 4) is None
    assert window.flush() == {"loss": 4.0} and window.flush() is None
    with pytest.raises(ValueError, match="every: at least 1 step, got 0"):
        MetricWindow(0)


def logged(parts, tmp_path, log_every: int) -> list[tuple[int, dict[str, float]]]:
    student, teacher = parts
    calls: list[tuple[int, dict[str, float]]] = []
    distill_stage(
        student=student, adapter=fresh_adapter(), data=WithTeacherImages(Images(12, 56), Images(12, 64)),
        targets=online_targets(teacher, CPU), config=config(epochs=1, batch_size=1, log_every=log_every),
        runtime=CPU, checkpoint=tmp_path / f"s{log_every}.pt", fingerprint="w",
        log=lambda values, step: calls.append((step, dict(values))),
    )  # fmt: skip
    return calls


def test_the_loop_logs_one_mean_per_window(parts, tmp_path):
    every_step = logged(parts, tmp_path, 1)
    windowed = logged(parts, tmp_path, 4)
    per_step = [values for step, values in every_step if set(values) == {"distill_loss"}]
    assert [step for step, _ in every_step[:12]] == list(range(1, 13)) and len(per_step) == 12
    assert [step for step, values in windowed if set(values) == {"distill_loss"}] == [4, 8, 12]
    means = [values["distill_loss"] for step, values in windowed if set(values) == {"distill_loss"}]
    expected = [sum(v["distill_loss"] for v in per_step[i : i + 4]) / 4 for i in (0, 4, 8)]
    assert means == pytest.approx(expected, rel=1e-6)  # the same seeded losses, averaged per window
