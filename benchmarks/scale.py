"""The paper-scale rehearsal on a CPU: the upstream half of the DAG, at tiny sizes, through the same code paths.

``python -m benchmarks.run --suite scale`` (and ``tests/benchmarks/test_scale.py`` in CI):

1. generates 12 SA-1B-format tars and stages them from a local folder (the indexing cost per image);
2. in a fresh copy of the repository, serves the tars over HTTP on 127.0.0.1 (throttled), runs
   ``dvc repro sa1b``, kills it with SIGKILL once some tars are staged, and runs ``dvc repro sa1b`` again:
   what the server sent twice for a tar staged before the kill is ``sa1b_bytes_redownloaded_after_kill``;
3. builds the teacher cache with 2 gloo ranks under ``torchrun``, SIGKILLs rank 1 once it has written
   shards, and runs it again: ``teacher_shards_recomputed_after_kill`` counts the shards written by the
   second run (goal: those the first left unfinished), ``teacher_valid_shards_rebuilt`` the valid ones it
   rewrote (goal 0), ``teacher_rows_per_rank`` who built what;
4. distils one stage with 2 loader workers and with none: ``distill_main_thread_ms_per_step``;
5. projects the paper profile's disk footprint and single-node 8-GPU upstream wall time (:func:`project`).

The JSON goes to ``benchmarks/results/scale-rehearsal.json`` (and the harness's usual file).

Projection (every input is either measured here or a stated assumption in :data:`PAPER_NODE`):

    N          = tars · images_per_tar                                 (10 · 11,186 = 111,860 images)
    T_stage    = tar_bytes / bandwidth + N · t_index / download_workers
    T_teacher  = max(N · F_SAM-H(1024) / (G · peak · MFU),  N · t_decode(1024) / cores)
    T_distill  = Σ_stage epochs · N · max(F_step(S) / (G · peak · MFU),  t_decode(S) / cores)
    F_step(S)  = F_DINOv2-B,3 blocks(S) + 3 · 2 · P_adapter · (S/14)²   (frozen forward; adapter fwd + bwd)
    disk       = tar_bytes + N · (b_manifest + b_teacher) + adapters,   b_teacher = 256 · Σ g² · 2 B

with t_index, t_decode(S) (a 1,500 × 2,250 px JPEG decoded in draft mode and resized to S, one core)
and b_manifest measured here, F from :mod:`benchmarks.flops`, G GPUs of bf16 ``peak`` at ``MFU``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from benchmarks.budget import UNLIMITED, Budget
from benchmarks.dvc_repro import copy_repository
from benchmarks.flops import DINOV2_SHAPES, VitShape, sam_encoder_flops, vit_forward_flops
from benchmarks.range_server import serve
from benchmarks.results import ROOT, Record, SuiteResult
from benchmarks.sizes import BenchSize
from benchmarks.timing import Timing
from fsdino.io.atomic import write_json_atomic

REHEARSAL_FILE = ROOT / "benchmarks/results/scale-rehearsal.json"
TINY_PROFILE = ROOT / "tests/pipeline/tiny_profile.yaml"


@dataclass(frozen=True)
class RehearsalSize:
    """How small the rehearsal is: enough tars and shards to have a "before" and an "after" the kill."""

    tars: int = 12
    images_per_tar: int = 4
    shard_images: int = 2
    teacher_arch: str = "vit_b"  # slow enough on a CPU that a rank can be killed part-way
    teacher_size: int = 160
    chunk_delay_s: float = 0.1  # per 16 KiB served: a tar takes a few tenths of a second
    kill_after_tars: int = 4
    kill_after_shards: int = 2  # of rank 1


#: The assumptions of the projection (a typical 8-GPU node and the paper's data), stated, not measured.
PAPER_NODE: dict[str, Any] = {
    "tars": 10, "images_per_tar": 11_186, "tar_bytes": 10 * 11.0e9, "bandwidth_bytes_s": 1.25e9,
    "download_workers": 4, "gpus": 8, "gpu": "H100 SXM", "peak_tflops": 989.4, "mfu": 0.35, "cpu_cores": 64,
    "stage_sizes": [126, 252, 518], "epochs_per_stage": 15, "adapter_params": 1_250_944,
    "student": "vit_base_patch14_dinov2", "teacher": "vit_h", "teacher_size": 1024,
}  # fmt: skip


def _env(workspace: Path) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(workspace), "TQDM_DISABLE": "1",
        "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
    }  # fmt: skip


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout_s: float) -> bool:
    """Poll ``condition`` every 20 ms until it holds (True) or ``process`` ends or time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def _workspace(target: Path, links: Path, size: RehearsalSize) -> Path:
    """A fresh copy of the repository whose params stage the served tars and build a sharded cache."""
    from components.profile import render

    copy_repository(target)
    profile = yaml.safe_load(TINY_PROFILE.read_text())
    _deep_update(profile, {
        "profile": "rehearsal",
        "stage_sa1b": {"source": "http", "links_file": str(links), "download_workers": 2, "retries": 0},
        "distill": {
            "teacher": {"arch": size.teacher_arch, "image_size": size.teacher_size},
            "cache": {"shard_images": size.shard_images, "batch_size": 2},
            "loop": {"num_workers": 2, "epochs": 1},
        },
        "tracking": {"enabled": False},
    })  # fmt: skip
    (target / "profiles/rehearsal.yaml").write_text(yaml.safe_dump(profile))
    (target / "params.yaml").write_text(render("rehearsal", target / "profiles"))
    subprocess.run(["git", "add", "-A"], cwd=target, check=True, capture_output=True)
    commit = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "rehearsal"]
    subprocess.run(commit, cwd=target, check=True, capture_output=True)
    return target


def _killed_then_rerun(
    command: list[str],
    workspace: Path,
    ready: Callable[[], bool],
    victim: Callable[[], int | None],
    timeout_s: float,
    between: Callable[[], None] | None = None,
) -> tuple[bool, subprocess.CompletedProcess]:
    """Start ``command``, SIGKILL ``victim()`` (a pid; ``None``: the whole process group) once ``ready()``,
    call ``between()`` once the first run has ended, then run ``command`` again to the end. Returns
    (whether the kill landed mid-run, the second run)."""
    first = subprocess.Popen(
        command, cwd=workspace, env=_env(workspace), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    landed = _wait_for(ready, first, timeout_s)
    if landed:
        pid = victim()
        if pid is None:
            os.killpg(first.pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    first.wait(timeout=timeout_s)
    if between is not None:
        between()
    second = subprocess.run(
        command, cwd=workspace, env=_env(workspace), capture_output=True, text=True, timeout=timeout_s
    )
    return landed, second


def _shard_manifests(cache_dir: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(cache_dir.glob("shard-*.json")):
        try:
            found[path.stem] = {**json.loads(path.read_text()), "mtime_ns": path.stat().st_mtime_ns}
        except (OSError, ValueError):
            continue
    return found


def _last_json_line(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _decode_ms(sizes: list[int], repeats: int = 3) -> dict[int, float]:
    """ms to decode a 1,500 × 2,250 px JPEG (SA-1B's released size) and resize it to each side S."""
    from fsdino.data.sa1b_images import load_square_image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, size=(60, 90, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((2250, 1500), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    payload = buffer.getvalue()
    result = {}
    for side in sizes:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            load_square_image(payload, side, "stretch")
            times.append(time.perf_counter() - start)
        result[side] = 1000 * min(times)
    return result


def project(measured: dict[str, Any], node: dict[str, Any] = PAPER_NODE) -> dict[str, Any]:
    """Disk and single-node wall time of the paper's upstream (module docstring formula)."""
    images = node["tars"] * node["images_per_tar"]
    throughput = node["gpus"] * node["peak_tflops"] * 1e12 * node["mfu"]
    cores = node["cpu_cores"]
    decode = {int(k): v / 1000 for k, v in measured["decode_ms"].items()}
    stage_s = (
        node["tar_bytes"] / node["bandwidth_bytes_s"]
        + images * measured["index_s_per_image"] / node["download_workers"]
    )
    teacher_flops = sam_encoder_flops(node["teacher"], node["teacher_size"])
    teacher_s = max(images * teacher_flops / throughput, images * decode[node["teacher_size"]] / cores)
    student = DINOV2_SHAPES[node["student"]]
    three_blocks = VitShape(student.embed_dim, 3, student.patch_size, student.mlp_ratio, student.prefix_tokens)
    distill_s, per_stage = 0.0, {}
    for side in node["stage_sizes"]:
        step_flops = vit_forward_flops(three_blocks, side) + 3 * 2 * node["adapter_params"] * (side // 14) ** 2
        seconds = node["epochs_per_stage"] * images * max(step_flops / throughput, decode[side] / cores)
        bound = "gpu" if step_flops / throughput > decode[side] / cores else "jpeg decoding"
        per_stage[str(side)] = {"seconds": seconds, "bound_by": bound, "flops_per_image": step_flops}
        distill_s += seconds
    grids = [side // 14 for side in node["stage_sizes"]]
    teacher_bytes = 256 * sum(g * g for g in grids) * 2
    disk = {
        "sa1b_tars_bytes": node["tar_bytes"],
        "sa1b_manifest_bytes": images * measured["manifest_bytes_per_image"],
        "teacher_cache_bytes": images * teacher_bytes,
        "teacher_bytes_per_image": teacher_bytes,
        "dvc_cache_bytes": images * measured["manifest_bytes_per_image"] + 3 * 5.1e6,  # manifests, index, adapters
    }
    disk["total_bytes"] = disk["sa1b_tars_bytes"] + disk["sa1b_manifest_bytes"] + disk["teacher_cache_bytes"]
    disk["total_bytes"] += disk["dvc_cache_bytes"]
    disk["before_bytes"] = node["tar_bytes"] * 3 + images * 256 * 64 * 64 * 2 * 2  # extracted + DVC copies
    return {
        "assumptions": node, "images": images, "teacher_flops_per_image": teacher_flops,
        "wall_s": {"stage": stage_s, "teacher": teacher_s, "distill": distill_s, "distill_stages": per_stage,
                   "total": stage_s + teacher_s + distill_s},
        "disk": disk,
    }  # fmt: skip


def rehearse(workdir: Path, size: RehearsalSize = RehearsalSize(), timeout_s: float = 600.0) -> dict[str, Any]:
    """Run the rehearsal in ``workdir`` (module docstring); returns the measured figures and the projection."""
    from components.stage_sa1b import StageSA1BConfig
    from components.stage_sa1b import run as stage
    from fsdino.data.synthetic_sa1b import write_links_file, write_synthetic_sa1b

    release = write_synthetic_sa1b(
        workdir / "release", num_tars=size.tars, images_per_tar=size.images_per_tar, seed=0, size_range=(96, 128)
    )
    names = [path.name for path in release.tar_paths]
    started = time.perf_counter()
    local = stage(StageSA1BConfig(
        source="local", tar_dir=release.tar_paths[0].parent, fraction=1.0, store_dir=workdir / "local-store",
        output_dir=workdir / "local-out", progress=False,
    ))  # fmt: skip
    index_s = (time.perf_counter() - started) / max(local["images"], 1)
    manifest_bytes = sum(path.stat().st_size for path in (workdir / "local-out").iterdir()) / local["images"]
    result: dict[str, Any] = {"rehearsal": asdict(size), "sa1b_local_images": local["images"]}

    with serve(release.tar_paths[0].parent, delay_s=size.chunk_delay_s) as (url, sent):
        links = write_links_file(workdir / "links.tsv", names, url)
        workspace = _workspace(workdir / "repo", links, size)
        records = workspace / "outputs/.work/sa1b/records"
        staged_at_kill: list[str] = []

        def enough_tars() -> bool:
            staged_at_kill[:] = sorted(path.stem + ".tar" for path in records.glob("sa_*.json"))
            return len(staged_at_kill) >= size.kill_after_tars

        dvc = [sys.executable, "-m", "dvc", "repro", "sa1b"]
        sent_first: dict[str, int] = {}  # what the killed run was sent (bytes in flight at the kill included)
        landed, rerun = _killed_then_rerun(
            dvc, workspace, enough_tars, lambda: None, timeout_s, between=lambda: sent_first.update(sent)
        )
        sent_total = dict(sent)
    staged = sorted(path.stem + ".tar" for path in records.glob("sa_*.json"))
    result.update({
        "sa1b_kill_landed_mid_run": landed, "sa1b_tars_staged_at_kill": len(staged_at_kill),
        "sa1b_rerun_rc": rerun.returncode, "sa1b_tars_staged_after_rerun": len(staged),
        "sa1b_bytes_redownloaded_after_kill": sum(sent_total.get(n, 0) - sent_first.get(n, 0) for n in staged_at_kill),
        "sa1b_bytes_sent_first_run": sum(sent_first.values()), "sa1b_bytes_sent_rerun": sum(sent_total.values())
        - sum(sent_first.values()), "sa1b_tar_bytes": sum(p.stat().st_size for p in release.tar_paths),
        "sa1b_index_s_per_image": index_s,
    })  # fmt: skip

    cache_dir = workspace / "outputs/.work/teacher_cache"
    victim: list[int] = []

    def rank1_wrote_shards() -> bool:
        built = [m for m in _shard_manifests(cache_dir).values() if m.get("built_by", {}).get("rank") == 1]
        if len(built) >= size.kill_after_shards:
            victim[:] = [built[0]["built_by"]["pid"]]
            return True
        return False

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    before: dict[str, dict] = {}  # the shards the killed run left, as the re-run finds them
    landed, rerun = _killed_then_rerun(
        [*torchrun, "-m", "components.teacher_cache"], workspace, rank1_wrote_shards, lambda: victim[0], timeout_s,
        between=lambda: before.update(_shard_manifests(cache_dir)),
    )  # fmt: skip
    after = _shard_manifests(cache_dir)
    summary = _last_json_line(rerun.stdout)
    rewritten = [name for name, entry in after.items() if before.get(name, {}).get("mtime_ns") != entry["mtime_ns"]]
    result.update({
        "teacher_kill_landed_mid_run": landed, "teacher_rerun_rc": rerun.returncode, "teacher_shards": len(after),
        "teacher_shards_valid_at_kill": len(before), "teacher_shards_recomputed_after_kill": len(rewritten),
        "teacher_valid_shards_rebuilt": sum(name in before for name in rewritten),
        "teacher_rows_per_rank": summary.get("rows_by_builder"), "teacher_bytes_per_image":
        summary.get("bytes_per_image"), "teacher_rerun_summary": summary,
    })  # fmt: skip

    for workers in (2, 0):
        params = yaml.safe_load((workspace / "params.yaml").read_text())
        params["distill"]["loop"]["num_workers"] = workers
        (workspace / f"params-w{workers}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        command = [sys.executable, "-m", "components.distill", "--stage", "1", "--params", f"params-w{workers}.yaml"]
        done = subprocess.run(command, cwd=workspace, env=_env(workspace), capture_output=True, text=True,
                              timeout=timeout_s)  # fmt: skip
        figures = _last_json_line(done.stdout)
        suffix = "" if workers else "_without_workers"
        result[f"distill_rc{suffix}"] = done.returncode
        result[f"distill_main_thread_ms_per_step{suffix}"] = figures.get("main_thread_data_ms_per_step")
        result[f"distill_eval_mse_after{suffix}"] = figures.get("eval_mse_after")

    decode = _decode_ms([*PAPER_NODE["stage_sizes"], PAPER_NODE["teacher_size"]])
    measured = {"decode_ms": decode, "index_s_per_image": index_s, "manifest_bytes_per_image": manifest_bytes}
    result["measured_per_item"] = measured
    result["paper_projection"] = project(measured)
    return result


def run(size: BenchSize, device: torch.device, budget: Budget = UNLIMITED, out: Path = REHEARSAL_FILE) -> SuiteResult:
    """The rehearsal as a benchmark suite (CPU whatever ``device``: it rehearses the code paths, not speed)."""
    del size, device, budget
    with tempfile.TemporaryDirectory(prefix="fsdino-scale-") as tmp:
        started = time.perf_counter()
        figures = rehearse(Path(tmp))
        wall_s = time.perf_counter() - started
    figures["wall_s"] = wall_s
    write_json_atomic(out, figures)
    record = Record(
        name="scale-rehearsal", batch_size=1, image_size=0, dtype="float32", unit="rehearsals/s",
        timing=Timing(warmup=0, times_s=(wall_s,)),
        params={key: value for key, value in figures.items() if not isinstance(value, dict)},
    )  # fmt: skip
    keys = (
        "sa1b_bytes_redownloaded_after_kill", "teacher_shards_recomputed_after_kill", "teacher_valid_shards_rebuilt",
        "teacher_bytes_per_image", "distill_main_thread_ms_per_step",
    )  # fmt: skip
    summary = {key: figures.get(key) for key in keys}
    summary["paper_upstream_wall_s"] = figures["paper_projection"]["wall_s"]["total"]
    summary["paper_disk_bytes"] = figures["paper_projection"]["disk"]["total_bytes"]
    return SuiteResult(records=[record], summary=summary, settings={"out": str(out)})
