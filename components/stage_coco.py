"""Stage COCO-20i: read the 2014 instances JSONs, check the images, write the fold split files.

Writes ``<out>/splits/fold<f>_train.txt`` (train2014, 60 base classes), ``fold<f>_val.txt`` (val2014,
20 novel classes) and ``<out>/manifest.json``; class ids in split files are COCO category ids.

    python -m components.stage_coco --root data/raw/coco --out data/coco
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from components.stage_pascal import TrainListOptions, stage_main
from fsdino.data import coco
from fsdino.data.benchmark import write_benchmark
from fsdino.data.train_lists import filter_train_pairs
from fsdino.errors import InputError
from fsdino.io.atomic import check_writable_dir


class CocoStageConfig(TrainListOptions):
    """``root``: the folder holding ``annotations/``, ``train2014/`` and ``val2014/`` (and the training-list
    filters of :class:`~components.stage_pascal.TrainListOptions`)."""

    root: Path
    out: Path = Path("data/coco")
    folds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    include_crowd: bool = True
    check_images: bool = True


def _check_images(source: coco.CocoInstances) -> None:
    """Every listed image exists and its header is readable and gives the JSON's size (no decoding)."""
    for index in range(len(source)):
        if not source.image_path(index).is_file():
            raise InputError(f"{source.image_path(index)}: image listed in {source.annotation_path.name} not found")
        source.check_image(index)


def run(config: CocoStageConfig) -> dict[str, Any]:
    check_writable_dir(config.out, what="out")
    sources = {split: coco.CocoInstances(config.root, split, config.include_crowd) for split in coco.SPLITS}
    train, val = sources["train2014"], sources["val2014"]
    if len(val.categories) != coco.NUM_CLASSES:
        raise InputError(f"{val.annotation_path}: expected {coco.NUM_CLASSES} categories, got {len(val.categories)}")
    if train.categories != val.categories:
        raise InputError(f"{train.annotation_path}: categories differ from those of {val.annotation_path.name}")
    if config.check_images:
        for source in sources.values():
            _check_images(source)
    category_ids = list(val.categories)
    splits, options = {}, {}
    for fold in config.folds:
        base_pairs = coco.fold_pairs(train, category_ids, fold, novel=False)
        novel = coco.fold_category_ids(category_ids, fold)
        splits[f"fold{fold}_train"] = filter_train_pairs(base_pairs, train, novel, config.train_rule)
        splits[f"fold{fold}_val"] = coco.fold_pairs(val, category_ids, fold, novel=True)
        options[f"fold{fold}_train"] = {"split": "train2014", "include_crowd": config.include_crowd}
        options[f"fold{fold}_val"] = {"split": "val2014", "include_crowd": config.include_crowd}
    return write_benchmark(
        config.out,
        dataset="coco",
        root=config.root,
        splits=splits,
        source_options=options,
        classes={str(category_id): name for category_id, name in val.categories.items()},
        folds={str(fold): {"novel": list(coco.fold_category_ids(category_ids, fold))} for fold in config.folds},
        num_train_images=len(train),
        num_val_images=len(val),
        include_crowd=config.include_crowd,
        **config.train_rule.model_dump(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(CocoStageConfig, run, argv, "stage_coco", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
