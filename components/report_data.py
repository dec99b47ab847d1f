"""Reading the pipeline's artifacts (``docs/artifacts.md``) into one in-memory :class:`ReportData`.

Only files that exist are read: a stage that has not run yet is simply absent. A file that exists but
is not what the contract says (bad JSON, a missing key or column, a non-numeric value) raises
:class:`InputError` naming the file and what was expected, so a broken stage is never reported as a
partial success.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from components.params import validate
from fsdino.errors import InputError

DISTILL_HISTORY_COLUMNS = ("stage", "image_size", "epoch", "loss")
TRAIN_HISTORY_COLUMNS = ("epoch", "train_loss", "train_loss_final", "train_loss_prior", "val_miou", "val_fb_iou")
PER_CLASS_COLUMNS = ("class_id", "class_name", "iou", "intersection", "union", "episodes")
TEXT_COLUMNS = frozenset({"class_name"})

STAGE_DIR = re.compile(r"^stage(\d+)$")
RUN_DIR = re.compile(r"^fold(\d+)_shot(\d+)$")
CROSSDOMAIN_DIR = "crossdomain"  # evaluate/crossdomain/<target>: Table 3


class DistillMetrics(BaseModel):
    """``distill/stage{n}/metrics.json``; every key of the contract must be present (values may be null)."""

    model_config = ConfigDict(extra="ignore")

    stage: int
    image_size: int
    epochs: int
    train_loss: float | None
    eval_mse_before: float | None
    eval_mse_after: float | None
    teacher: Any
    cached_targets: Any


class BaselineMetrics(BaseModel):
    """The parameter-free baseline scored on the same episodes (thresholded prototype cosine similarity)."""

    model_config = ConfigDict(extra="ignore")

    miou: float
    fb_iou: float
    threshold: float | None


class EvalMetrics(BaseModel):
    """``evaluate/{variant}/fold{f}_shot{k}/metrics.json``; IoUs are fractions in [0, 1]."""

    model_config = ConfigDict(extra="ignore")

    dataset: str
    variant: str
    fold: int
    shot: int
    miou: float
    fb_iou: float
    episodes: int
    seed: int
    classes: list[Any]
    baseline: BaselineMetrics | None


class CrossDomainScores(BaseModel):
    """The scores of one cross-domain target: FSS has mIoU / FB-IoU, DAVIS J / F / J&F (fractions)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    miou: float | None = None
    fb_iou: float | None = None
    j: float | None = Field(default=None, alias="J")
    f: float | None = Field(default=None, alias="F")
    jf: float | None = Field(default=None, alias="J&F")


class CrossDomainMetrics(CrossDomainScores):
    """``evaluate/crossdomain/{fss,davis}/metrics.json`` (Table 3), with the baseline's scores when run."""

    dataset: str
    split: str
    variant: str
    fold: int
    shot: int
    trained_on: str
    episodes: int
    baseline: CrossDomainScores | None = None
    split_rule: str | None = None  # FSS-1000: "official lists (…)" or "seeded rule (seed s)"


@dataclass(frozen=True, order=True)
class RunKey:
    """One (variant, fold, shot) cell of the experiment grid."""

    variant: str
    fold: int
    shot: int


@dataclass
class DistillStage:
    """One distillation stage: its summary and/or its per-epoch loss (either may be missing)."""

    stage: int
    metrics: DistillMetrics | None
    history: pd.DataFrame | None


@dataclass
class TrainRun:
    key: RunKey
    history: pd.DataFrame


@dataclass
class EvalRun:
    key: RunKey
    metrics: EvalMetrics
    per_class: pd.DataFrame | None
    overlays: list[Path]


@dataclass
class CrossDomainRun:
    metrics: CrossDomainMetrics
    overlays: list[Path]


@dataclass
class ReportData:
    """Everything the dashboard shows, sorted (stages, then variant/fold/shot)."""

    outputs_dir: Path
    distill: list[DistillStage] = field(default_factory=list)
    train: list[TrainRun] = field(default_factory=list)
    evaluations: list[EvalRun] = field(default_factory=list)
    crossdomain: list[CrossDomainRun] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.distill or self.train or self.evaluations or self.crossdomain)

    @property
    def datasets(self) -> list[str]:
        return sorted({run.metrics.dataset for run in self.evaluations})


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV that must hold ``columns``; every column but the text ones must be numeric (NaN allowed)."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV, expected columns {','.join(columns)}") from error
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {','.join(missing)}; expected {','.join(columns)}")
    for name in columns:
        if name in TEXT_COLUMNS:
            continue
        numbers = pd.to_numeric(table[name], errors="coerce")
        bad = numbers.isna() & table[name].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 2  # 1-based, after the header line
            raise InputError(f"{path}: column {name!r} line {row}: expected a number, got {table[name][bad].iloc[0]!r}")
        table[name] = numbers
    return table


def _numbered_dirs(parent: Path, pattern: re.Pattern[str]) -> list[tuple[tuple[int, ...], Path]]:
    if not parent.is_dir():
        return []
    found = []
    for child in parent.iterdir():
        match = pattern.match(child.name)
        if match and child.is_dir():
            found.append((tuple(int(group) for group in match.groups()), child))
    return sorted(found)


def collect_distill(outputs_dir: Path) -> list[DistillStage]:
    stages = []
    for (number,), folder in _numbered_dirs(outputs_dir / "distill", STAGE_DIR):
        metrics_path, history_path = folder / "metrics.json", folder / "history.csv"
        metrics = None
        if metrics_path.is_file():
            metrics = validate(DistillMetrics, read_json(metrics_path), str(metrics_path))
        history = read_table(history_path, DISTILL_HISTORY_COLUMNS) if history_path.is_file() else None
        if metrics is not None or history is not None:
            stages.append(DistillStage(number, metrics, history))
    return stages


def _run_dirs(outputs_dir: Path, step: str) -> list[tuple[RunKey, Path]]:
    root = outputs_dir / step
    if not root.is_dir():
        return []
    runs = []
    for variant_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        for (fold, shot), folder in _numbered_dirs(variant_dir, RUN_DIR):
            runs.append((RunKey(variant_dir.name, fold, shot), folder))
    return sorted(runs, key=lambda pair: pair[0])


def collect_train(outputs_dir: Path) -> list[TrainRun]:
    runs = []
    for key, folder in _run_dirs(outputs_dir, "train"):
        history_path = folder / "history.csv"
        if history_path.is_file():
            runs.append(TrainRun(key, read_table(history_path, TRAIN_HISTORY_COLUMNS)))
    return runs


def _check_identity(path: Path, metrics: EvalMetrics, key: RunKey) -> None:
    """A metrics file whose own fields disagree with its folder is stale or misplaced: refuse to report it."""
    said = RunKey(metrics.variant, metrics.fold, metrics.shot)
    if said != key:
        raise InputError(
            f"{path}: says variant={said.variant} fold={said.fold} shot={said.shot}, "
            f"expected variant={key.variant} fold={key.fold} shot={key.shot} from its folder"
        )


def collect_evaluations(outputs_dir: Path) -> list[EvalRun]:
    runs = []
    for key, folder in _run_dirs(outputs_dir, "evaluate"):
        metrics_path = folder / "metrics.json"
        if not metrics_path.is_file():
            continue  # an evaluation without its summary is not a result
        metrics = validate(EvalMetrics, read_json(metrics_path), str(metrics_path))
        _check_identity(metrics_path, metrics, key)
        per_class_path = folder / "per_class.csv"
        per_class = read_table(per_class_path, PER_CLASS_COLUMNS) if per_class_path.is_file() else None
        overlays = sorted((folder / "overlays").glob("episode_*.png"))
        runs.append(EvalRun(key, metrics, per_class, overlays))
    return runs


def collect_crossdomain(outputs_dir: Path) -> list[CrossDomainRun]:
    root = outputs_dir / "evaluate" / CROSSDOMAIN_DIR
    runs = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        metrics_path = folder / "metrics.json"
        if metrics_path.is_file():
            metrics = validate(CrossDomainMetrics, read_json(metrics_path), str(metrics_path))
            runs.append(CrossDomainRun(metrics, sorted((folder / "overlays").glob("episode_*.png"))))
    return runs


def collect(outputs_dir: Path | str) -> ReportData:
    """Read every artifact of ``docs/artifacts.md`` found under ``outputs_dir``."""
    outputs_dir = Path(outputs_dir)
    if not outputs_dir.is_dir():
        raise InputError(f"{outputs_dir}: outputs folder not found")
    return ReportData(
        outputs_dir=outputs_dir,
        distill=collect_distill(outputs_dir),
        train=collect_train(outputs_dir),
        evaluations=collect_evaluations(outputs_dir),
        crossdomain=collect_crossdomain(outputs_dir),
    )
