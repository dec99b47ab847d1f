"""Pipeline step: run the SAM teacher once over the distillation images and keep its embeddings (fp16).

Every distillation stage reads its targets from this cache (``distill.targets: cached``), so the
teacher — SAM ViT-H at 1024 px in the paper, the costliest network of the pipeline — runs once instead
of once per epoch per stage.

    python -m components.teacher_cache [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

from components.cli import params_main
from components.config import Params
from fsdino.config import TeacherConfig
from fsdino.data.sa1b import SA1BImages, read_manifest
from fsdino.models.build import build_teacher
from fsdino.models.teacher import SAM_PATCH_SIZE
from fsdino.training.runtime import runtime
from fsdino.training.teacher_cache import build_teacher_cache, cache_is_valid


def teacher_id(config: TeacherConfig) -> str:
    """Names the teacher a cache was built by: architecture, input size and weights."""
    weights = config.sha256 if config.checkpoint is not None and config.sha256 else str(config.checkpoint or "random")
    return f"sam_{config.arch}@{config.image_size}:{weights}"


def manifest_keys(params: Params) -> list[str]:
    return [str(key) for key in read_manifest(params.distill.manifest)["key"]]


def run(params: Params, args: argparse.Namespace | None = None) -> dict[str, Any]:
    distill = params.distill
    keys = manifest_keys(params)
    identity = teacher_id(distill.teacher)
    if cache_is_valid(distill.teacher_cache, identity, keys):
        return {"cache": str(distill.teacher_cache), "images": len(keys), "reused": True}
    images = SA1BImages(distill.manifest, distill.teacher.image_size, multiple_of=SAM_PATCH_SIZE)
    with runtime(distill.loop.device, distill.loop.amp) as rt, torch.inference_mode():
        build_teacher_cache(
            build_teacher(distill.teacher), images, keys, distill.teacher_cache, teacher_id=identity,
            batch_size=distill.cache_batch_size, device=rt.device, num_workers=distill.loop.num_workers,
        )  # fmt: skip
    return {"cache": str(distill.teacher_cache), "images": len(keys), "reused": False, "teacher": identity}


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
