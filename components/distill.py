"""Pipeline step: one coarse-to-fine distillation stage (paper §3.3) — stage n trains the adapter at
``distill.image_sizes[n-1]`` starting from stage n-1's adapter, and reports the validation MSE against
the teacher at the model's final resolution before and after, so stages are comparable.

    python -m components.distill --stage 2 [--params params.yaml]

Writes ``<out_dir>/stage<n>/{adapter.pt, metrics.json, history.csv}``; the training state (exact resume
after a kill) lives under ``outputs/.work/`` so that DVC's clean-up of outputs does not remove it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch.utils.data import Subset

from components.cli import fingerprint, params_main, prepare_work_dir, step_logger
from components.config import WORK_DIR, Params
from components.teacher_cache import manifest_keys, teacher_id
from fsdino.checkpoints import load_adapter, save_adapter, sha256_of
from fsdino.data.sa1b_images import SA1BImages
from fsdino.errors import InputError
from fsdino.io.atomic import atomic_path, write_json_atomic
from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.build import build_encoder, seeded
from fsdino.models.teacher import SAM_PATCH_SIZE
from fsdino.models.teacher_builder import build_teacher
from fsdino.training.distill import WithCachedTargets, WithTeacherImages, distill_stage, evaluate_mse, online_targets
from fsdino.training.runtime import Runtime, runtime
from fsdino.training.teacher_cache import TeacherTargets


def split_indices(count: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Every k-th manifest row (k = round(1 / val_fraction)) is held out for validation."""
    every = max(2, round(1 / val_fraction))
    val = list(range(0, count, every))
    held = set(val)
    return [i for i in range(count) if i not in held], val


def _targets(params: Params, rt: Runtime, keys: list[str], image_size: int):
    """(dataset at ``image_size``, target function) for the configured target source; cached targets
    come inside the dataset's items (read by the loader's workers), so their function is ``None``."""
    distill = params.distill
    images = SA1BImages(distill.manifest, image_size)
    if distill.targets == "cached":
        grid = image_size // 14
        cache = TeacherTargets(distill.teacher_cache, teacher_id=teacher_id(distill.teacher), keys=keys, grid=grid)
        return WithCachedTargets(images, cache), None
    teacher_view = SA1BImages(distill.manifest, distill.teacher.image_size, multiple_of=SAM_PATCH_SIZE)
    return WithTeacherImages(images, teacher_view), online_targets(build_teacher(distill.teacher), rt)


def run(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    distill, stage = params.distill, args.stage
    if not 1 <= stage <= len(distill.image_sizes):
        raise InputError(f"--stage: expected 1..{len(distill.image_sizes)} (distill.image_sizes), got {stage}")
    image_size, final_size = distill.image_sizes[stage - 1], distill.image_sizes[-1]
    keys = manifest_keys(params)
    train_rows, val_rows = split_indices(len(keys), distill.val_fraction)
    student = build_encoder(params.model.encoder, params.model.image_size, blocks=3)
    with seeded(distill.loop.seed):  # stage 1 starts from the same weights in every run
        adapter = BottleneckAdapter(in_dim=student.embed_dim)
    previous = distill.stage_dir(stage - 1) / "adapter.pt" if stage > 1 else None
    if previous is not None:
        load_adapter(previous, adapter)
    out_dir = distill.stage_dir(stage)
    run_id = fingerprint(
        params.model.encoder, image_size, distill.loop, distill.teacher, distill.targets, keys,
        sha256_of(previous) if previous else None,
    )  # fmt: skip
    state = prepare_work_dir(WORK_DIR / "distill" / f"stage{stage}", run_id) / "state.pt"
    with runtime(distill.loop.device, distill.loop.amp) as rt:
        train_data, targets = _targets(params, rt, keys, image_size)
        val_data, val_targets = _targets(params, rt, keys, final_size)
        val_subset = Subset(val_data, val_rows)
        workers = distill.loop.num_workers
        mse_before = evaluate_mse(
            student=student, adapter=adapter, data=val_subset, targets=val_targets, runtime=rt, num_workers=workers
        )
        loader_stats: dict[str, float] = {}
        position = distill_stage(
            student=student, adapter=adapter, data=Subset(train_data, train_rows), targets=targets,
            config=distill.loop, runtime=rt, checkpoint=state, fingerprint=run_id, log=step_logger(params),
            stats=loader_stats,
        )  # fmt: skip
        mse_after = evaluate_mse(
            student=student, adapter=adapter, data=val_subset, targets=val_targets, runtime=rt, num_workers=workers
        )
        if not rt.is_main:
            return {}
    metrics = {
        "stage": stage, "image_size": image_size, "epochs": distill.loop.epochs,
        "train_loss": position.history[-1]["loss"], "eval_mse_before": mse_before, "eval_mse_after": mse_after,
        "eval_image_size": final_size, "teacher": teacher_id(distill.teacher),
        "cached_targets": distill.targets == "cached", "train_images": len(train_rows), "val_images": len(val_rows),
    }  # fmt: skip
    save_adapter(out_dir / "adapter.pt", adapter, metrics)
    history = pd.DataFrame(position.history).assign(stage=stage, image_size=image_size)
    with atomic_path(out_dir / "history.csv") as temporary:
        history[["stage", "image_size", "epoch", "loss"]].to_csv(temporary, index=False)
    write_json_atomic(out_dir / "metrics.json", metrics)
    # Run-dependent timing goes to the printed summary (and MLflow), never into the outputs.
    wait_ms = 1000 * loader_stats.get("wait_s", 0.0) / max(loader_stats.get("steps", 0), 1)
    return {**metrics, "out_dir": str(out_dir), "main_thread_data_ms_per_step": wait_ms}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", type=int, required=True, help="1-based stage (index into distill.image_sizes)")


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0], _arguments, lambda args: f"distill_{args.stage}")


if __name__ == "__main__":
    sys.exit(main())
