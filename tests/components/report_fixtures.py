"""A miniature ``outputs/`` tree as ``docs/artifacts.md`` describes it, and a reader for the report's tables.

The numbers are closed-form (see :func:`fixture_miou`), so tests can compute what the page must show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

VARIANTS = ("ba_pcs", "full")
FOLDS = (0, 1)
SHOTS = (1, 5)
STAGES = (1, 2, 3)
STAGE_SIZES = {1: 126, 2: 252, 3: 518}
EPOCHS = 4
OVERLAYS_PER_RUN = 2
BASE_MIOU = {"ba_pcs": 0.50, "ba_svp_pcs": 0.55, "full": 0.60}
CLASS_NAMES = ("aeroplane", "<cat> & dog")  # the second one must come out escaped


def fixture_miou(variant: str, fold: int, shot: int) -> float:
    return BASE_MIOU[variant] + 0.02 * fold + (0.05 if shot == 5 else 0.0)


def fixture_fb_iou(variant: str, fold: int, shot: int) -> float:
    return fixture_miou(variant, fold, shot) + 0.2


def fixture_baseline_miou(fold: int, shot: int) -> float:
    return 0.30 + 0.01 * fold + 0.001 * shot


def class_ids(fold: int) -> list[int]:
    return [5 * fold + 1, 5 * fold + 2]


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_overlay(path: Path, seed: int, size: tuple[int, int] = (96, 32)) -> None:
    """A small colourful PNG standing in for a supports | truth | prediction panel."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    pixels[:, : width // 3] = (200, 60, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_distill(outputs: Path, stage: int) -> None:
    folder = outputs / "distill" / f"stage{stage}"
    losses = [round(1.0 / (stage * (epoch + 1)), 6) for epoch in range(EPOCHS)]
    size = STAGE_SIZES[stage]
    rows = [[stage, size, epoch, loss] for epoch, loss in enumerate(losses)]
    write_csv(folder / "history.csv", ["stage", "image_size", "epoch", "loss"], rows)
    metrics = {
        "stage": stage,
        "image_size": size,
        "epochs": EPOCHS,
        "train_loss": losses[-1],
        "eval_mse_before": 0.8 / stage,
        "eval_mse_after": 0.5 / stage,
        "teacher": "sam_vit_h",
        "cached_targets": True,
    }
    write_json(folder / "metrics.json", metrics)


def write_train(outputs: Path, variant: str, fold: int, shot: int) -> None:
    header = ["epoch", "train_loss", "train_loss_final", "train_loss_prior", "val_miou", "val_fb_iou"]
    rows = []
    for epoch in range(EPOCHS):
        loss = 1.0 - 0.1 * epoch
        val = fixture_miou(variant, fold, shot) - 0.05 * (EPOCHS - 1 - epoch)
        rows.append([epoch, loss, loss * 0.6, loss * 0.4, round(val, 6), round(val + 0.2, 6)])
    write_csv(outputs / "train" / variant / f"fold{fold}_shot{shot}" / "history.csv", header, rows)


def write_evaluation(outputs: Path, variant: str, fold: int, shot: int, overlays: int = OVERLAYS_PER_RUN) -> None:
    folder = outputs / "evaluate" / variant / f"fold{fold}_shot{shot}"
    miou = fixture_miou(variant, fold, shot)
    metrics = {
        "dataset": "synthetic",
        "variant": variant,
        "fold": fold,
        "shot": shot,
        "miou": miou,
        "fb_iou": fixture_fb_iou(variant, fold, shot),
        "episodes": 20,
        "seed": 0,
        "classes": class_ids(fold),
        "baseline": {"miou": fixture_baseline_miou(fold, shot), "fb_iou": 0.6, "threshold": 0.5},
    }
    write_json(folder / "metrics.json", metrics)
    header = ["class_id", "class_name", "iou", "intersection", "union", "episodes"]
    rows = [
        [class_id, name, round(miou + offset, 6), 100, 200, 10]
        for class_id, name, offset in zip(class_ids(fold), CLASS_NAMES, (-0.05, 0.05), strict=True)
    ]
    write_csv(folder / "per_class.csv", header, [[f'"{v}"' if isinstance(v, str) else v for v in r] for r in rows])
    for index in range(overlays):
        write_overlay(folder / "overlays" / f"episode_{index:04d}.png", seed=index + 10 * fold + 100 * shot)


#: Table 3's fixture numbers (fractions), as components/crossdomain.py writes them.
CROSSDOMAIN = {"fss": {"miou": 0.7123, "fb_iou": 0.8}, "davis": {"J": 0.41, "F": 0.47, "J&F": 0.44}}
CROSSDOMAIN_BASELINE = {"fss": {"miou": 0.3, "fb_iou": 0.5}, "davis": {"J": 0.2, "F": 0.25, "J&F": 0.225}}


def write_crossdomain(outputs: Path, target: str, overlays: int = 1) -> None:
    folder = outputs / "evaluate" / "crossdomain" / target
    metrics = {
        "dataset": target, "split": "test" if target == "fss" else "val", "variant": "full", "fold": 0, "shot": 1,
        "trained_on": "coco", "episodes": 12, **CROSSDOMAIN[target], "seed": 0,
        "baseline": {**CROSSDOMAIN_BASELINE[target], "threshold": 0.4},
        "split_rule": "seeded rule (seed 0)" if target == "fss" else None,
    }  # fmt: skip
    write_json(folder / "metrics.json", metrics)
    for index in range(overlays):
        write_overlay(folder / "overlays" / f"episode_{index:04d}.png", seed=1000 + index)


def write_outputs_tree(outputs: Path, variants: tuple[str, ...] = VARIANTS) -> Path:
    """distill stages 1-3, train + evaluate for every variant × fold × shot, and both cross-domain targets."""
    for stage in STAGES:
        write_distill(outputs, stage)
    for variant in variants:
        for fold in FOLDS:
            for shot in SHOTS:
                write_train(outputs, variant, fold, shot)
                write_evaluation(outputs, variant, fold, shot)
    for target in CROSSDOMAIN:
        write_crossdomain(outputs, target)
    return outputs


@pytest.fixture(name="outputs_tree")
def outputs_tree_fixture(tmp_path: Path) -> Path:
    """The complete miniature tree in ``tmp_path/outputs`` (import this name; tests ask for ``outputs_tree``)."""
    return write_outputs_tree(tmp_path / "outputs")


@dataclass
class Table:
    """A parsed ``<table>``: its caption and its rows of cell texts (header rows included)."""

    caption: str
    rows: list[list[str]]

    def row(self, label: str) -> list[str]:
        return next(row for row in self.rows if row and row[0] == label)


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, Table] = {}
        self.current: Table | None = None
        self.cell: list[str] | None = None
        self.in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.current = Table("", [])
            self.tables[dict(attrs).get("id") or f"table{len(self.tables)}"] = self.current
        elif tag == "tr" and self.current is not None:
            self.current.rows.append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = []
        elif tag == "caption":
            self.in_caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.current is not None and self.cell is not None:
            self.current.rows[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "caption":
            self.in_caption = False
        elif tag == "table":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        elif self.in_caption and self.current is not None:
            self.current.caption += data


def read_tables(html_text: str) -> dict[str, Table]:
    """Every table of a page by id, cell text unescaped (``&lt;`` → ``<``)."""
    parser = _TableParser()
    parser.feed(html_text)
    return parser.tables
