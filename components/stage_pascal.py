"""Stage PASCAL-5i: check the VOC2012 + SegmentationClassAug layout and write the fold split files.

Writes ``<out>/splits/fold<f>_{train,val}.txt`` and ``<out>/manifest.json`` (see ``docs/data.md``).
Also holds :func:`stage_main`, the command-line wrapper the other ``stage_*`` steps share.

    python -m components.stage_pascal --root data/raw/pascal --out data/pascal
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field

from components.params import DEFAULT_PARAMS, section_values, validate
from fsdino.data import pascal
from fsdino.data.benchmark import write_benchmark
from fsdino.data.train_lists import TrainListRule, filter_train_pairs
from fsdino.errors import InputError, report_error
from fsdino.io.atomic import check_writable_dir

ConfigT = TypeVar("ConfigT", bound=BaseModel)
Folds = list[int]


class TrainListOptions(BaseModel):
    """HDMNet's training-list filters (``fsdino.data.train_lists``; HDMNet: ``exclude_novel: true``,
    ``min_object_pixels: 2048``); the defaults keep every pair (HSNet's lists)."""

    model_config = ConfigDict(extra="forbid")

    exclude_novel: bool = False
    min_object_pixels: int = Field(default=0, ge=0)

    @property
    def train_rule(self) -> TrainListRule:
        return TrainListRule(exclude_novel=self.exclude_novel, min_object_pixels=self.min_object_pixels)


class PascalStageConfig(TrainListOptions):
    """``root``: the folder holding ``VOC2012/``; ``hsnet_lists``: optional folder with HSNet's
    ``trn/fold<f>.txt`` and ``val/fold<f>.txt`` to use instead of deriving the pairs from the masks (the
    training-list filters apply to either)."""

    root: Path
    out: Path = Path("data/pascal")
    folds: Folds = Field(default_factory=lambda: [0, 1, 2, 3])
    hsnet_lists: Path | None = None
    check_images: bool = True


def write_pascal_benchmark(
    root: Path,
    out: Path,
    *,
    folds: Sequence[int],
    dataset: str = "pascal",
    train_rule: TrainListRule | None = None,
    hsnet_lists: Path | None = None,
    check_images: bool = True,
    class_names: Sequence[str] = pascal.VOC_CLASSES,
    **extra: Any,
) -> dict[str, Any]:
    """Scan the masks, build every fold's pairs, then write splits and manifest (nothing before the scan
    has succeeded). ``train_rule``: HDMNet's training-list filters (default: none)."""
    train_rule = train_rule or TrainListRule()
    train_ids, val_ids = pascal.image_sets(root)
    source = pascal.PascalVOC(root, image_ids=sorted(set(train_ids) | set(val_ids)))
    image_classes = pascal.scan_classes(source, check_images=check_images)
    splits = {}
    for fold in folds:
        if hsnet_lists is not None:
            train, val = pascal.hsnet_fold_pairs(hsnet_lists, fold)
            missing = {image_id for image_id, _ in train + val} - image_classes.keys()
            if missing:
                raise InputError(f"{hsnet_lists}: fold {fold} lists image {sorted(missing)[0]!r} absent from {root}")
        else:
            train, val = pascal.fold_pairs(image_classes, train_ids, val_ids, fold)
        train = filter_train_pairs(train, source, pascal.fold_classes(fold), train_rule)
        splits[f"fold{fold}_train"], splits[f"fold{fold}_val"] = train, val
    return write_benchmark(
        out,
        dataset=dataset,
        root=root,
        splits=splits,
        classes={str(class_id): name for class_id, name in enumerate(class_names, start=1)},
        folds={str(fold): {"novel": list(pascal.fold_classes(fold))} for fold in folds},
        num_train_images=len(train_ids),
        num_val_images=len(val_ids),
        **train_rule.model_dump(),
        **extra,
    )


def run(config: PascalStageConfig) -> dict[str, Any]:
    check_writable_dir(config.out, what="out")
    return write_pascal_benchmark(
        config.root,
        config.out,
        folds=config.folds,
        train_rule=config.train_rule,
        hsnet_lists=config.hsnet_lists,
        check_images=config.check_images,
    )


# --- the command line shared by every stage -------------------------------------------------------------


def _is_text_field(annotation: Any) -> bool:
    """Path/str fields (optionally ``| None``) take flag values verbatim; others are parsed as YAML."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_is_text_field(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation in (str, Path)


def _flag_overrides(model: type[BaseModel], values: dict[str, str | None]) -> dict[str, Any]:
    overrides = {}
    for name, text in values.items():
        if text is None:
            continue
        annotation = model.model_fields[name].annotation
        overrides[name] = text if _is_text_field(annotation) else yaml.safe_load(text)
    return overrides


def build_config(model: type[ConfigT], argv: Sequence[str] | None, section: str, description: str) -> ConfigT:
    """``--params``/``--section`` (the section is optional unless named) then one flag per config field."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=None, help=f"params file (default: {DEFAULT_PARAMS})")
    parser.add_argument("--section", default=None, help=f"section of the params file (default: {section})")
    for name, field in model.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description)
    arguments = vars(parser.parse_args(argv))
    data, path, wanted = section_values(arguments.pop("params"), arguments.pop("section"), section)
    from_file = bool(data)
    data.update(_flag_overrides(model, arguments))
    return validate(model, data, str(path) if from_file else "command line", wanted if from_file else "")


def stage_main(
    model: type[ConfigT],
    run_stage: Callable[[ConfigT], dict[str, Any]],
    argv: Sequence[str] | None,
    section: str,
    description: str,
) -> int:
    """Parse, run, print a one-line JSON summary; an :class:`InputError` prints ``error: …`` and returns 2."""
    try:
        config = build_config(model, argv, section, description)
        manifest = run_stage(config)
    except Exception as error:
        return report_error(error)
    large = ("splits", "classes", "folds", "sequences")
    summary = {key: value for key, value in manifest.items() if key not in large}
    summary["splits"] = {name: entry["pairs"] for name, entry in manifest.get("splits", {}).items()}
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(PascalStageConfig, run, argv, "stage_pascal", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
