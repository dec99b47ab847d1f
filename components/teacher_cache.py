"""Pipeline step: run the SAM teacher once over the distillation images and keep its targets, in shards.

Every distillation stage reads its targets from this cache (``distill.targets: cached``), so the
teacher — SAM ViT-H at 1024 px in the paper, the costliest network of the pipeline — runs once instead
of once per epoch per stage. The shards (``distill.cache.dir``, outside DVC's outputs) hold the targets
already pooled to every stage's grid, fp16; the DVC output is their index (``teacher_cache.json``).

    python -m components.teacher_cache [--params params.yaml]
    torchrun --standalone --nproc-per-node=8 -m components.teacher_cache   # rank r builds shards[r::8]

A re-run (after a crash, a retry, a kill of one rank) rebuilds only the shards that do not validate; two
processes, on one machine or on two sharing ``distill.cache.dir``, never build the same shard (claims).
Rank 0 waits until every shard is built (taking over those whose builder died) and writes the index.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch.distributed as dist

from components.cli import params_main
from components.config import Params
from fsdino.config import TeacherConfig
from fsdino.data.sa1b import read_manifest
from fsdino.data.sa1b_images import SA1BImages
from fsdino.models.teacher import SAM_PATCH_SIZE
from fsdino.models.teacher_builder import build_teacher
from fsdino.training.runtime import Runtime, runtime
from fsdino.training.teacher_cache import (
    CacheSpec,
    build_shards,
    remove_surplus_shards,
    shard_rows_by_rank,
    write_index,
)

POLL_S = 5.0  # how often rank 0 looks at shards that others are still building


def teacher_id(config: TeacherConfig) -> str:
    """Names the teacher a cache was built by: architecture, input size and weights."""
    weights = config.sha256 if config.checkpoint is not None and config.sha256 else str(config.checkpoint or "random")
    return f"sam_{config.arch}@{config.image_size}:{weights}"


def manifest_keys(params: Params) -> list[str]:
    return [str(key) for key in read_manifest(params.distill.manifest)["key"]]


def cache_spec(params: Params, keys: Sequence[str]) -> CacheSpec:
    distill = params.distill
    return CacheSpec(teacher_id(distill.teacher), distill.grids, tuple(keys), distill.cache.shard_images)


def run(params: Params, args: argparse.Namespace | None = None) -> dict[str, Any]:
    distill, cache = params.distill, params.distill.cache
    spec = cache_spec(params, manifest_keys(params))
    images = SA1BImages(distill.manifest, distill.teacher.image_size, multiple_of=SAM_PATCH_SIZE)
    with runtime(distill.loop.device, distill.loop.amp) as rt:
        built_by = {"host": socket.gethostname(), "pid": os.getpid(), "rank": rt.rank, "world": rt.world_size}
        options: dict[str, Any] = {
            "batch_size": cache.batch_size, "device": rt.device, "autocast": rt.autocast,
            "num_workers": distill.loop.num_workers, "built_by": built_by,
        }  # fmt: skip

        def build(shards: Sequence[int]) -> dict[str, list]:
            return build_shards(
                lambda: build_teacher(distill.teacher).to(rt.device), images, spec, cache.dir, shards=shards,
                stale_after_s=cache.stale_after_s, checksum=cache.verify == "checksum", progress=rt.is_main,
                **options,
            )  # fmt: skip

        mine = build(range(spec.num_shards)[rt.rank :: rt.world_size])
        ranks = _gather(rt, mine)  # every rank's summary, once every rank is done
        if not rt.is_main:
            return {}
        waited = _finish_others(build, spec)
    remove_surplus_shards(cache.dir, spec)
    index = write_index(distill.teacher_cache, cache.dir, spec)
    return {
        "cache": str(distill.teacher_cache), "shards_dir": str(cache.dir), "images": len(spec.keys),
        "shards": spec.num_shards, "computed": sum(len(rank["computed"]) for rank in ranks) + len(waited["computed"]),
        "reused": sum(len(rank["reused"]) for rank in ranks),
        "invalid": sorted(pair for rank in ranks for pair in rank["invalid"]) + waited["invalid"],
        "bytes_per_image": index["bytes_per_image"], "teacher": spec.teacher_id,
        "rows_by_builder": shard_rows_by_rank(cache.dir, spec),
    }  # fmt: skip


def _gather(rt: Runtime, summary: dict[str, list]) -> list[dict[str, list]]:
    """The :func:`build_shards` summaries of all ranks (rank order), in every rank; also a barrier."""
    if not rt.distributed:
        return [summary]
    gathered: list[dict[str, list] | None] = [None] * rt.world_size
    dist.all_gather_object(gathered, summary)
    return [rank for rank in gathered if rank is not None]


def _finish_others(build, spec: CacheSpec) -> dict[str, list]:
    """Rank 0, after every local rank is done: build or wait for the shards still missing (claimed by a
    process elsewhere, or left by one that died: its claim goes stale and is taken over)."""
    done: dict[str, list] = {"computed": [], "invalid": []}
    todo = list(range(spec.num_shards))
    while todo:
        result = build(todo)
        done["computed"] += result["computed"]
        done["invalid"] += result["invalid"]
        todo = result["claimed_elsewhere"]
        if todo:
            time.sleep(POLL_S)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
