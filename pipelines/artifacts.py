"""The reproduce flow's Prefect artifacts, read from the evaluation outputs on disk (docs/artifacts.md).

* ``fsdino-<variant>-fold<f>-shot<k>``: a table artifact per evaluation (per-class IoU), described by its
  mIoU, FB-IoU and the baseline's mIoU;
* ``fsdino-crossdomain-<target>``: a table artifact per cross-domain target of Table 3 (FSS-1000: per-class
  IoU; DAVIS-17: per-object J and F), described by its headline score;
* ``fsdino-summary``: a markdown artifact, mIoU per fold and mean, one row per (variant, shot).

Keys are stable across runs, so Prefect versions them and lists the latest of each.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines.dag import Step

#: The stage groups whose outputs are per-fold results (docs/artifacts.md): the main runs and the ablation.
EVALUATE_GROUPS = ("evaluate", "ablation_evaluate")
#: The stage group of Table 3's cross-domain evaluations.
CROSSDOMAIN_GROUP = "crossdomain"
SUMMARY_KEY = "fsdino-summary"


def artifact_key(variant: str, fold: int, shot: int) -> str:
    """The per-fold artifact key, stable across runs: ``fsdino-ba-svp-pcs-fold2-shot5``."""
    return re.sub(r"[^a-z0-9-]+", "-", f"fsdino-{variant}-fold{fold}-shot{shot}".lower())


def evaluation_dir(step: Step, root: Path) -> Path | None:
    """The output folder of an evaluate step that holds its ``metrics.json``, if written."""
    found = [root / out for out in step.outs if (root / out / "metrics.json").is_file()]
    return found[0] if found else None


def _cell(value: str) -> Any:
    """A CSV value as a number when it is one (NaN as empty), else the text."""
    try:
        number = float(value)
    except ValueError:
        return value
    return None if math.isnan(number) else int(number) if number.is_integer() and "." not in value else number


def _percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        return [{name: _cell(value) for name, value in row.items()} for row in csv.DictReader(handle)]


def publish_fold(step: Step, root: Path) -> str | None:
    """The table artifact of one evaluation (per-class IoU), described by its mIoU; returns its key."""
    folder = evaluation_dir(step, root)
    if folder is None:
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = _rows(folder / "per_class.csv")
    key = artifact_key(metrics["variant"], metrics["fold"], metrics["shot"])
    baseline = metrics.get("baseline") or {}
    description = (
        f"**{step.name}**: mIoU {_percent(metrics.get('miou'))}%, FB-IoU {_percent(metrics.get('fb_iou'))}% over "
        f"{metrics.get('episodes')} episodes (baseline mIoU {_percent(baseline.get('miou'))}%)"
    )
    create_table_artifact(rows, key=key, description=description)
    return key


def summary_markdown(results: Sequence[dict[str, Any]]) -> str:
    """mIoU (%) per fold, one row per (variant, shot), with the mean over folds: the paper's table layout."""
    folds = sorted({r["fold"] for r in results})
    rows: dict[tuple[str, int], dict[int, float]] = {}
    for result in results:
        rows.setdefault((result["variant"], result["shot"]), {})[result["fold"]] = result["miou"]
    lines = [
        "# FS-DINO reproduction: mIoU (%) per fold",
        "",
        "| variant | shot | " + " | ".join(f"fold {f}" for f in folds) + " | mean |",
        "| --- | --- | " + " | ".join("---:" for _ in folds) + " | ---: |",
    ]
    for (variant, shot), by_fold in sorted(rows.items()):
        mean = sum(by_fold.values()) / len(by_fold)
        cells = " | ".join(_percent(by_fold.get(f)) for f in folds)
        lines.append(f"| {variant} | {shot} | {cells} | {_percent(mean)} |")
    return "\n".join(lines) + "\n"


def publish_summary(steps: Sequence[Step], root: Path) -> str | None:
    """The markdown artifact :data:`SUMMARY_KEY` over the evaluations present on disk."""
    folders = [evaluation_dir(step, root) for step in steps if step.group in EVALUATE_GROUPS]
    results = [json.loads((folder / "metrics.json").read_text()) for folder in folders if folder is not None]
    if not results:
        return None
    create_markdown_artifact(summary_markdown(results), key=SUMMARY_KEY, description="mIoU per fold and mean")
    return SUMMARY_KEY


def publish_crossdomain(step: Step, root: Path) -> str | None:
    """The table artifact of one cross-domain target (``fsdino-crossdomain-fss``); returns its key."""
    folder = evaluation_dir(step, root)
    if folder is None:
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    target = metrics["dataset"]
    if target == "davis":
        table, headline = "per_object.csv", f"J&F {_percent(metrics.get('J&F'))}%"
    else:
        table, headline = "per_class.csv", f"mIoU {_percent(metrics.get('miou'))}%"
    key = re.sub(r"[^a-z0-9-]+", "-", f"fsdino-crossdomain-{target}".lower())
    description = (
        f"**{step.name}**: {headline} over {metrics.get('episodes')} one-shot episodes, model "
        f"{metrics.get('variant')} trained on {metrics.get('trained_on')} fold {metrics.get('fold')}"
    )
    create_table_artifact(_rows(folder / table), key=key, description=description)
    return key


def publish(step: Step, root: Path) -> str | None:
    """The artifact of ``step``'s results, if it is an evaluation (per fold or cross-domain)."""
    if step.group in EVALUATE_GROUPS:
        return publish_fold(step, root)
    if step.group == CROSSDOMAIN_GROUP:
        return publish_crossdomain(step, root)
    return None
