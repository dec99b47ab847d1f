"""Pipeline step: episodic training of one (variant, fold, shot) (paper §3.4.3, §4.1).

    python -m components.train --variant full --fold 0 --shot 1 [--params params.yaml]

The model is built from ``model`` (decoder from SAM when ``model.sam_checkpoint`` is set), its adapter
initialised from the last distillation stage, and trained on the fold's base classes; every epoch it
is validated on the first ``train.val_episodes`` of the fold's fixed test episodes. Writes
``<train.out_dir>/<variant>/fold<f>_shot<k>/{best.pt, last.pt, history.csv, metrics.json}``; the
resumable state lives under ``outputs/.work/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from components.benchmark_data import FoldData
from components.cli import (
    copy_atomic,
    fingerprint,
    fold_step_arguments,
    fold_step_name,
    params_main,
    prepare_work_dir,
    step_logger,
)
from components.config import WORK_DIR, Params
from components.features import attach_memo
from fsdino.checkpoints import load_adapter, sha256_of
from fsdino.config import ModelConfig
from fsdino.data.dataset import make_loader
from fsdino.errors import InputError
from fsdino.evaluation.engine import evaluate
from fsdino.io.atomic import atomic_path, write_json_atomic
from fsdino.models.build import build_fsdino
from fsdino.models.fsdino import FSDINO
from fsdino.training.episodic import train_episodic
from fsdino.training.runtime import Runtime, runtime

HISTORY_COLUMNS = ["epoch", "train_loss", "train_loss_final", "train_loss_prior", "val_miou", "val_fb_iou"]


def build_model(params: Params, variant: str) -> tuple[FSDINO, ModelConfig]:
    """The model to train: config of the profile with ``variant``, adapter from distillation when enabled."""
    config = params.model.model_copy(update={"variant": variant})
    model = build_fsdino(config, seed=params.train.loop.seed)  # the same initial weights in every run
    if params.train.init_adapter_from_distillation:
        load_adapter(params.distill.stage_dir(len(params.distill.image_sizes)) / "adapter.pt", model.adapter)
    return model, config


def _validator(params: Params, data: FoldData, shot: int, image_size: int, rt: Runtime):
    episodes = data.test_episodes(shot, params.evaluate.episodes, params.evaluate.seed)[: params.train.val_episodes]
    dataset = data.test_dataset(episodes, image_size)

    def validate(model: FSDINO) -> dict[str, float]:
        """The held-out scores; under ``torchrun`` each rank scores its share and all get the sum (the same
        numbers on every rank, so every rank keeps the same best epoch)."""
        loader = make_loader(dataset, batch_size=params.evaluate.batch_size, rank=rt.rank, world_size=rt.world_size)
        settings = params.evaluate
        options = {"resolution": settings.resolution, "shot_fusion": settings.shot_fusion}
        meter, _ = evaluate(model, loader, data.novel_classes, rt, **options, across_ranks=True)
        return meter.summary()

    return validate


def run(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    variant, fold, shot = args.variant, args.fold, args.shot
    train = params.train
    if not params.trains(variant, fold, shot):
        raise InputError(
            f"train: ({variant}, fold {fold}, {shot}-shot) is not a run of train or ablation (variants × folds × shots)"
        )
    data = FoldData.open(params.benchmark.out, fold).keep_decoded(params.train.keep_decoded)
    model, config = build_model(params, variant)
    adapter_file = params.distill.stage_dir(len(params.distill.image_sizes)) / "adapter.pt"
    run_id = fingerprint(
        config, train.loop, train.augment, train.episodes_per_epoch, train.val_episodes, params.evaluate, variant, fold,
        shot,
        sha256_of(adapter_file) if train.init_adapter_from_distillation else None, train.epoch,
    )  # fmt: skip
    work_dir = prepare_work_dir(WORK_DIR / "train" / variant / f"fold{fold}_shot{shot}", run_id)
    sampler = data.train_sampler(shot, train.loop.seed, train.episodes_per_epoch, train.epoch)
    size = config.image_size
    transform = train.augment.transform(size)
    memo = attach_memo(params, model.encoder)
    with runtime(train.loop.device, train.loop.amp) as rt:
        position = train_episodic(
            model=model, model_config=config, config=train.loop, runtime=rt, work_dir=work_dir, fingerprint=run_id,
            episodes=lambda epoch: data.train_dataset(sampler, epoch, transform, train.loop.seed),
            validate=_validator(params, data, shot, size, rt),
            metadata={"variant": variant, "fold": fold, "shot": shot, "profile": params.profile},
            log=step_logger(params),
        )  # fmt: skip
        if not rt.is_main:
            return {}
    out_dir = train.run_dir(variant, fold, shot)
    for name in ("best.pt", "last.pt"):
        copy_atomic(work_dir / name, out_dir / name)
    history = pd.DataFrame(position.history).reindex(columns=HISTORY_COLUMNS)
    with atomic_path(out_dir / "history.csv") as temporary:
        history.to_csv(temporary, index=False)
    best = history.loc[history["val_miou"].idxmax()] if history["val_miou"].notna().any() else history.iloc[-1]
    summary = {
        "variant": variant, "fold": fold, "shot": shot, "epochs": len(history),
        "best_epoch": int(best["epoch"]), "best_val_miou": float(best["val_miou"]),
        "final_train_loss": float(history["train_loss"].iloc[-1]),
    }  # fmt: skip
    write_json_atomic(out_dir / "metrics.json", summary)
    # the memo's counts go to the printed summary only: a run resumed after it finished trains no step and
    # counts nothing, and the stage's output files must not depend on that
    memo_counts = {} if memo is None else {"feature_memo": {"hits": memo.hits, "misses": memo.misses}}
    return {**summary, **memo_counts, "out_dir": str(out_dir)}


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0], fold_step_arguments, fold_step_name("train"))


if __name__ == "__main__":
    sys.exit(main())
