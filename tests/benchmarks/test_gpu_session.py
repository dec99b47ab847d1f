"""``benchmarks/gpu_session.sh``, the one command a lent GPU machine runs, rehearsed on the CPU at tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.results import ROOT, validate_document

SCRIPT = ROOT / "benchmarks/gpu_session.sh"


def session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    (tmp_path / "wheels").mkdir(exist_ok=True)  # none to install: this interpreter has every package
    values = {"OUT": str(out), "PYTHON": sys.executable, "BENCH_SIZE": "tiny", "BENCH_DEVICE": "cpu",
              "BENCH_WHEELS": str(tmp_path / "wheels"), "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=os.environ | values | env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_gpu_session_runs_the_cuda_tests_then_the_suites_and_leaves_everything_in_out(tmp_path):
    result = session(tmp_path, BENCH_SUITES="encoder,train", BENCH_SESSION_S="400")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    environment = (out / "environment.txt").read_text()
    assert "torch" in environment and "segment-anything 1.0" in environment
    assert "skipped" in (out / "gpu-tests.log").read_text()  # no CUDA here: the CUDA tests say so
    written = sorted(path.name.split("-")[-1] for path in (out / "results").glob("*.json"))
    assert written == ["encoder.json", "train.json"]
    for path in (out / "results").glob("*.json"):
        doc = json.loads(path.read_text())
        validate_document(doc)
        assert doc["size"] == "tiny" and 0 < doc["settings"]["budget"]["budget_s"] <= 300
    assert "### `encoder`" in result.stdout and "benchmarks exit 0" in result.stdout


def test_the_gpu_session_refuses_to_start_benchmarks_it_has_no_time_for(tmp_path):
    result = session(tmp_path, BENCH_SUITES="encoder", BENCH_SESSION_S="60")
    assert result.returncode == 1 and "no benchmarks" in result.stdout
    assert not list((tmp_path / "out/results").iterdir())


def test_the_gpu_session_needs_out():
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env={"PATH": os.environ["PATH"]}, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "set OUT" in result.stderr
