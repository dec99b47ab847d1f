"""Rendering :class:`ReportData` as one self-contained HTML page (inline CSS, inline SVG, data-URI images).

Every value from the artifacts is escaped. Sections carry stable ids (``results``, ``ablation``,
``crossdomain``, ``per-class``, ``distillation``, ``training``, ``overlays``) and so do the tables, so that
people can link to them and tests can find them; a section with nothing to show is left out, together
with its nav link.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from components import report_tables as tables
from components.report_data import EvalRun, ReportData
from components.report_figures import distill_figure, png_data_uri, training_figure

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; padding: 0 24px 48px; max-width: 1280px; background: #fff; }
header { border-bottom: 3px solid #1f77b4; margin-bottom: 8px; padding: 16px 0 8px; }
h1 { margin: 0 0 8px; font-size: 26px; } h2 { margin-top: 36px; border-bottom: 1px solid #d0d7de; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { font-weight: 600; color: #57606a; } dl.facts dd { margin: 0; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; font-weight: 600; }
table { border-collapse: collapse; margin: 12px 0 20px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 6px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; }
thead th { background: #eef2f7; } tbody th { text-align: left; font-weight: 600; background: #fafbfc; }
td.num { text-align: right; } td.check { text-align: center; color: #1a7f37; font-weight: 700; }
tr.baseline th, tr.baseline td { font-style: italic; color: #57606a; }
tbody tr:nth-child(even) td { background: #f6f8fa; }
.grid { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
figure { margin: 8px 0 16px; } figcaption { color: #57606a; font-size: 13px; }
svg { max-width: 100%; height: auto; }
.overlays { display: flex; flex-wrap: wrap; gap: 12px; }
.overlays img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
p.note { color: #57606a; font-size: 13px; }
footer { margin-top: 40px; color: #57606a; font-size: 13px; }
"""

Formatter = Callable[[Any], str]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(digits: int) -> Formatter:
    """A formatter: fixed ``digits`` for floats, ``–`` for missing values, other values as text."""
    return lambda value: "–" if is_missing(value) else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def significant(value: Any) -> str:
    return "–" if is_missing(value) else f"{value:.4g}" if isinstance(value, float) else str(value)


def plain_table(frame: pd.DataFrame, table_id: str, caption: str, formats: dict[str, Formatter]) -> str:
    """A table whose first column (or the index when it holds labels) heads each row."""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.rename_axis(frame.index.name or "Method").reset_index()
    head = "".join(f'<th scope="col">{esc(column)}</th>' for column in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for position, (column, value) in enumerate(zip(frame.columns, record, strict=True)):
            text = esc(formats.get(column, significant)(value))
            if position == 0:
                cells.append(f'<th scope="row">{text}</th>')
            else:
                kind = "check" if value == "✓" else "num" if isinstance(value, numbers.Real) else "text"
                cells.append(f'<td class="{kind}">{text}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table id="{esc(table_id)}"><caption>{esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def results_table_html(frame: pd.DataFrame, table_id: str, caption: str) -> str:
    """Paper layout: a column group per shot (Fold0…FoldN, Mean), the best value of each column in bold."""
    shots = list(dict.fromkeys(shot for shot, _ in frame.columns))
    group = "".join(
        f'<th scope="colgroup" colspan="{sum(1 for s, _ in frame.columns if s == shot)}">{shot}-shot</th>'
        for shot in shots
    )
    sub = "".join(f'<th scope="col">{esc(column)}</th>' for _, column in frame.columns)
    best = frame.max(axis=0, skipna=True)
    incomplete = {shot: frame[shot].drop(columns=tables.MEAN).isna().any(axis=1) for shot in shots}
    partial = False
    rows = []
    for label, values in frame.iterrows():
        cells = []
        for (shot, column), value in values.items():
            text = number(1)(value)
            if not is_missing(value) and math.isclose(value, best[(shot, column)]) and len(frame) > 1:
                text = f"<strong>{text}</strong>"
            if column == tables.MEAN and incomplete[shot][label] and not is_missing(value):
                text, partial = f"{text}*", True
            cells.append(f'<td class="num">{text}</td>')
        kind = ' class="baseline"' if str(label).startswith(tables.BASELINE_LABEL) else ""
        rows.append(f'<tr{kind}><th scope="row">{esc(label)}</th>{"".join(cells)}</tr>')
    note = '<p class="note">* mean over the folds evaluated for that row only.</p>' if partial else ""
    return (
        f'<table id="{esc(table_id)}"><caption>{esc(caption)}</caption><thead>'
        f'<tr><th scope="col" rowspan="2">Method</th>{group}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{note}"
    )


def results_section(data: ReportData) -> str:
    notes = '<p class="note">IoU in percent, best value of each column in bold.'
    notes += " The baseline is the parameter-free prototype cosine similarity on the same frozen encoder.</p>"
    miou = results_table_html(tables.results_table(data, "miou"), "results-miou", "mIoU (%) per fold")
    fb_iou = results_table_html(tables.results_table(data, "fb_iou"), "results-fbiou", "FB-IoU (%) per fold")
    return f"<h2>Few-shot segmentation results</h2>{notes}{miou}{fb_iou}"


def ablation_section(data: ReportData, shot: int) -> str:
    frame = tables.ablation_table(data, shot)
    caption = f"Ablation, {shot}-shot, mean over folds (paper Table 4)"
    formats = {"mIoU (%)": number(1), "FB-IoU (%)": number(1)}
    return f"<h2>Ablation</h2>{plain_table(frame, 'ablation-table', caption, formats)}"


def per_class_section(data: ReportData) -> str:
    parts = []
    for fold, shot in tables.fold_shot_pairs(data):
        frame = tables.per_class_table(data, fold, shot)
        formats = {column: number(1) for column in frame.columns if column not in ("Class id", "Class", "Episodes")}
        formats["Class id"] = formats["Episodes"] = lambda value: str(int(value)) if not is_missing(value) else "–"
        caption = f"Fold {fold}, {shot}-shot: IoU (%) per class"
        parts.append(plain_table(frame, f"per-class-fold{fold}-shot{shot}", caption, formats))
    return f'<h2>Per-class IoU</h2><div class="grid">{"".join(parts)}</div>'


def distillation_section(data: ReportData) -> str:
    summary = tables.distill_summary(data)
    table = "" if summary.empty else plain_table(summary, "distill-table", "Distillation stages", {})
    svg = distill_figure(data.distill)
    figure = f"<figure>{svg}<figcaption>Coarse-to-fine distillation of the adapter.</figcaption></figure>"
    return f"<h2>Feature distillation</h2>{table}{figure if svg else ''}"


def training_section(data: ReportData) -> str:
    summary = tables.training_summary(data)
    formats = {"Best val mIoU (%)": number(1), "Best epoch": lambda v: "–" if is_missing(v) else str(int(v))}
    parts = [plain_table(summary, "training-table", "Training runs", formats)]
    variants = tables.ordered_variants(run.key.variant for run in data.train)
    for variant in variants:
        for shot in sorted({run.key.shot for run in data.train if run.key.variant == variant}):
            runs = [run for run in data.train if run.key.variant == variant and run.key.shot == shot]
            title = f"{tables.variant_label(variant)}, {shot}-shot"
            svg = training_figure(runs, title, salt=f"train-{variant}-{shot}")
            parts.append(f"<figure>{svg}<figcaption>{esc(title)}: one line per fold.</figcaption></figure>")
    return f"<h2>Training</h2>{''.join(parts)}"


def overlay_figure(path: Path, max_width: int, name: str, alt: str) -> str:
    """One overlay panel as an inline image, captioned ``<name> · <episode>``."""
    uri, width, height = png_data_uri(path, max_width)
    return (
        f'<figure><img src="{uri}" width="{width}" height="{height}" alt="{esc(alt)}">'
        f"<figcaption>{esc(name)} · {esc(path.stem)}</figcaption></figure>"
    )


def overlay_row(run: EvalRun, per_run: int, max_width: int) -> str:
    """One variant's first ``per_run`` panels of a fold and shot, side by side."""
    name = tables.variant_label(run.key.variant)
    images = [
        overlay_figure(path, max_width, name, f"{name}, fold {run.key.fold}, {run.key.shot}-shot: {path.stem}")
        for path in run.overlays[:per_run]
    ]
    return f'<div class="overlays">{"".join(images)}</div>'


def overlays_section(data: ReportData, per_run: int, max_width: int) -> str:
    """Grouped by fold and shot, one row per variant: the fixed episodes line up for comparison."""
    parts = []
    for fold, shot in sorted({(r.key.fold, r.key.shot) for r in data.evaluations}, key=lambda p: (p[1], p[0])):
        runs = [r for r in data.evaluations if r.key.fold == fold and r.key.shot == shot and r.overlays]
        rank = {variant: index for index, variant in enumerate(tables.ordered_variants(r.key.variant for r in runs))}
        rows = [overlay_row(run, per_run, max_width) for run in sorted(runs, key=lambda r: rank[r.key.variant])]
        if rows and per_run:
            parts.append(f"<h3>Fold {fold} · {shot}-shot</h3>{''.join(rows)}")
    legend = "Each panel: supports with their masks, query with ground truth, query with prediction."
    legend = f'<p class="note">{legend}</p>'
    return f"<h2>Qualitative results</h2>{legend}{''.join(parts)}" if parts else ""


def crossdomain_section(data: ReportData, per_run: int, max_width: int) -> str:
    frame = tables.crossdomain_table(data)
    formats = {column: number(1) for column in frame.columns if column != "Model"}
    caption = "Cross-domain, one-shot, no fine-tuning (%; paper Table 3)"
    images = []
    for run in data.crossdomain:
        name = tables.CROSSDOMAIN_LABELS.get(run.metrics.dataset, run.metrics.dataset)
        images += [overlay_figure(path, max_width, name, f"{name}: {path.stem}") for path in run.overlays[:per_run]]
    overlays = f'<div class="overlays">{"".join(images)}</div>' if images else ""
    note = (
        '<p class="note">FSS-1000: mIoU over its test classes, every test image a query once. DAVIS-17: '
        "J&amp;F-Mean over the objects, the first frame and its masks as the support, first and last frames "
        "not scored.</p>"
    )
    seeded = [run.metrics.split_rule for run in data.crossdomain if (run.metrics.split_rule or "").startswith("seeded")]
    if seeded:
        note += (
            f'<p class="note">FSS-1000 classes split by the {esc(seeded[0])}, not HSNet&#x27;s lists: its '
            "numbers are not comparable with published ones.</p>"
        )
    return f"<h2>Cross-domain</h2>{note}{plain_table(frame, 'crossdomain-table', caption, formats)}{overlays}"


SECTION_TITLES = {
    "results": "Results",
    "ablation": "Ablation",
    "crossdomain": "Cross-domain",
    "per-class": "Per class",
    "distillation": "Distillation",
    "training": "Training",
    "overlays": "Overlays",
}


def sections(data: ReportData, overlays_per_run: int, overlay_max_width: int) -> dict[str, str]:
    """Section id → inner HTML, in page order, only for the sections that have something to show."""
    found: dict[str, str] = {}
    if data.evaluations:
        found["results"] = results_section(data)
        shot = tables.ablation_shot(data)
        if shot is not None:
            found["ablation"] = ablation_section(data, shot)
    if data.crossdomain:
        found["crossdomain"] = crossdomain_section(data, overlays_per_run, overlay_max_width)
    if data.evaluations and tables.fold_shot_pairs(data):
        found["per-class"] = per_class_section(data)
    if data.distill:
        found["distillation"] = distillation_section(data)
    if data.train:
        found["training"] = training_section(data)
    overlays = overlays_section(data, overlays_per_run, overlay_max_width)
    if overlays:
        found["overlays"] = overlays
    return found


def header(data: ReportData, title: str, generated: str, commit: str | None) -> str:
    facts = {"Generated": generated, "Git commit": commit or "unknown", "Outputs": str(data.outputs_dir)}
    if data.datasets:
        facts["Dataset"] = ", ".join(data.datasets)
    if data.evaluations:
        facts["Evaluated runs"] = str(len(data.evaluations))
    items = "".join(f"<dt>{esc(name)}</dt><dd>{esc(value)}</dd>" for name, value in facts.items())
    return f'<h1>{esc(title)}</h1><dl class="facts" id="run-facts">{items}</dl>'


def page(data: ReportData, found: dict[str, str], *, title: str, generated: str, commit: str | None) -> str:
    """The whole document: header with the run facts and a nav, then the ``found`` sections in order."""
    nav = "".join(f'<a href="#{key}">{esc(SECTION_TITLES[key])}</a>' for key in found)
    body = "".join(f'<section id="{key}">{content}</section>' for key, content in found.items())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header>{header(data, title, generated, commit)}<nav>{nav}</nav></header>"
        f"<main>{body}</main><footer>Written by components/report.py from the artifacts listed in "
        "docs/artifacts.md.</footer></body></html>\n"
    )
