"""Wall time of the demo pipeline: ``dvc repro`` from scratch in a fresh copy of the repository.

The copy holds the files git knows (tracked, or untracked and not ignored) except ``outputs/``, with
the repository's ``params.yaml`` as it is (the demo profile unless another one was rendered: the
profile's name is recorded) and a ``.dvc/config`` without remotes, in a new git repository. The suite
times a first ``dvc repro`` (every stage) and a second one (nothing to do: DVC's own overhead). On a
CPU run the GPUs are hidden from the pipeline (``CUDA_VISIBLE_DEVICES=""``). Not run by default: it
takes minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from benchmarks.budget import UNLIMITED, Budget
from benchmarks.common import skipped
from benchmarks.results import ROOT, Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import Timing

DVC_CONFIG = "[core]\n    autostage = true\n    no_scm = false\n"
EXCLUDED = ("outputs/",)


def copy_repository(target: Path, source: Path = ROOT) -> None:
    """Copy ``source``'s git-visible files (minus :data:`EXCLUDED`) into ``target`` as a new git repository."""
    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    names = subprocess.run(listing, cwd=source, capture_output=True, text=True, check=True).stdout.splitlines()
    for name in names:
        path = source / name
        if name.startswith(EXCLUDED) or not path.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / name)
    (target / ".dvc").mkdir(exist_ok=True)
    (target / ".dvc/config").write_text(DVC_CONFIG)
    for command in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    commit = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "benchmark"]
    subprocess.run(commit, cwd=target, check=True, capture_output=True)


def timed_repro(workspace: Path, device: torch.device, timeout_s: float) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``dvc repro`` in ``workspace``; returns its wall time and the finished process."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(workspace), "TQDM_DISABLE": "1"}
    if device.type != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return time.perf_counter() - start, result


def run(size: BenchSize, device: torch.device, timeout_s: float = 3600.0, budget: Budget = UNLIMITED) -> SuiteResult:
    """Two ``dvc repro`` in a fresh copy; each may take ``timeout_s`` and no more than what is left of ``budget``
    (a repro cut short is an ``error`` record; one not started because the budget is spent, ``skipped``)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile, image_size = params.get("profile", "unknown"), int(params["model"]["image_size"])
    records = []
    with tempfile.TemporaryDirectory(prefix="fsdino-bench-dvc-") as tmp:
        workspace = Path(tmp)
        copy_repository(workspace)
        for name in ("first", "no-op"):
            record = Record(
                name=f"dvc-repro/{profile}/{name}", batch_size=1, image_size=image_size, dtype="float32",
                unit="repros/s", params={"profile": profile, "stages_run": 0, "wall_s": None},
            )  # fmt: skip
            if budget.expired():
                records.append(skipped(record))
                continue
            if records and records[-1].status != "ok":
                records.append(replace(record, status="skipped", note="the first dvc repro did not succeed"))
                continue
            left = budget.remaining_s()
            limit = timeout_s if left is None else min(timeout_s, left)
            try:
                wall_s, result = timed_repro(workspace, device, limit)
            except subprocess.TimeoutExpired:
                records.append(replace(record, status="error", note=f"dvc repro did not finish in {limit:.0f} s"))
                continue
            ran = sum(line.startswith("Running stage") for line in result.stdout.splitlines())
            ok = result.returncode == 0
            records.append(
                replace(
                    record, status="ok" if ok else "error", timing=Timing(warmup=0, times_s=(wall_s,)),
                    params=record.params | {"stages_run": ran, "wall_s": wall_s},
                    note="" if ok else (result.stderr or result.stdout)[-1000:],
                )
            )  # fmt: skip
    walls = {record.name.rsplit("/", 1)[1]: record.params["wall_s"] for record in records}
    summary = {"profile": profile, "first_repro_wall_s": walls["first"], "noop_repro_wall_s": walls["no-op"]}
    return SuiteResult(records=records, summary=summary, settings={"profile": profile, "timeout_s": timeout_s})
