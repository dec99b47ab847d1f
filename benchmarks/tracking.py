"""Metric-logging overhead per training step against a real ``mlflow server`` on 127.0.0.1.

Two ways of logging the three per-step losses of episodic training, over the same simulated steps:

- ``every_step_sync`` (the loops before): one synchronous ``mlflow.log_metrics`` call per step;
- ``window_async`` (the loops now): :class:`fsdino.training.metric_window.MetricWindow` means every
  ``LOG_EVERY`` steps, through :func:`components.tracking.metric_logger` (MLflow's asynchronous logging),
  the queue flushed at the end (inside the timed span, as :func:`components.tracking.stage_run` does).

Per-step overhead ``c`` = wall time of the loop (no training work in it) / steps. Projection for a run of
``S`` optimiser steps: added wall time = ``S · c``; with ``S`` = 1.2M (paper-coco, the issue's figure)
that is ``1.2e6 · c`` seconds, and ``S / LOG_EVERY`` tracking calls instead of ``S``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient

from benchmarks.budget import UNLIMITED, Budget
from benchmarks.results import Record, SuiteResult
from benchmarks.servers import free_port, running
from benchmarks.sizes import BenchSize
from benchmarks.timing import Timing
from components.tracking import metric_logger
from fsdino.training.metric_window import MetricWindow

STEPS = 400
LOG_EVERY = 50
PAPER_STEPS = 1_200_000
LOSSES = ("train_loss", "train_loss_final", "train_loss_prior")


def server_command(folder: Path, port: int) -> list[str]:
    """``mlflow server`` with a SQLite store and local artifacts in ``folder``, on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def _steps(mode: str) -> tuple[float, str]:
    """Wall seconds of ``STEPS`` simulated steps logged the ``mode`` way (flush included), and the new run's id."""
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(STEPS, len(LOSSES), generator=generator).tolist()
    with mlflow.start_run(run_name=mode) as active:
        log = metric_logger("train/full/fold0_shot1")
        window = MetricWindow(LOG_EVERY)
        started = time.perf_counter()
        for step, row in enumerate(losses, start=1):
            values = dict(zip(LOSSES, row, strict=True))
            if mode == "every_step_sync":
                mlflow.log_metrics({f"train/full/fold0_shot1/{k}": v for k, v in values.items()}, step=step)
            elif (means := window.add(values, step)) is not None:
                log(means, step)
        mlflow.flush_async_logging()
        return time.perf_counter() - started, active.info.run_id


def run(size: BenchSize, device: torch.device, budget: Budget = UNLIMITED) -> SuiteResult:
    """Both modes against one server; records ms per step and the points stored."""
    del size, device, budget
    records, per_step = [], {}
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="fsdino-tracking-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = server_command(Path(tmp), port)
        try:
            with running(command, None, f"{url}/health", Path(tmp) / "server.log", timeout_s=120):
                mlflow.set_tracking_uri(url)
                mlflow.set_experiment("tracking-benchmark")
                for mode in ("every_step_sync", "window_async"):
                    seconds, run_id = _steps(mode)
                    stored = len(MlflowClient(url).get_metric_history(run_id, "train/full/fold0_shot1/train_loss"))
                    per_step[mode] = 1000 * seconds / STEPS
                    records.append(
                        Record(
                            name=mode, batch_size=1, image_size=0, dtype="float32", unit="steps/s",
                            timing=Timing(warmup=0, times_s=(seconds / STEPS,)),
                            params={"steps": STEPS, "log_every": 1 if mode == "every_step_sync" else LOG_EVERY,
                                    "ms_per_step": per_step[mode], "points_stored_per_metric": stored},
                        )
                    )  # fmt: skip
        finally:
            mlflow.set_tracking_uri(None)
            if saved is not None:
                os.environ["MLFLOW_TRACKING_URI"] = saved
    before, after = per_step["every_step_sync"], per_step["window_async"]
    summary = {
        "ms_per_step_before": before, "ms_per_step_after": after, "speedup": before / after if after else None,
        "paper_coco_added_s_before": PAPER_STEPS * before / 1000,
        "paper_coco_added_s_after": PAPER_STEPS * after / 1000,
        "paper_coco_calls_before": PAPER_STEPS, "paper_coco_calls_after": PAPER_STEPS // LOG_EVERY,
    }  # fmt: skip
    return SuiteResult(
        records=records,
        summary=summary,
        settings={"steps": STEPS, "log_every": LOG_EVERY, "server": "mlflow server 127.0.0.1, sqlite"},
    )
