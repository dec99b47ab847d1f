"""The dashboard's tables as DataFrames: the numbers, computed once, before any HTML.

IoUs are shown in percent like the paper (metrics files hold fractions). A Mean is the plain mean of the
folds present in its row; a row missing some folds keeps a Mean over the others and the renderer marks it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from components.report_data import CrossDomainScores, EvalRun, ReportData

VARIANT_ORDER = ("ba_pcs", "ba_svp_pcs", "full")
VARIANT_LABELS = {"ba_pcs": "BA+PCS", "ba_svp_pcs": "BA+SVP+PCS", "full": "FS-DINO (full)"}
ABLATION_COMPONENTS = ("BA", "SVP", "PCS", "4D Corr.")
VARIANT_COMPONENTS = {"ba_pcs": {"BA", "PCS"}, "ba_svp_pcs": {"BA", "SVP", "PCS"}, "full": set(ABLATION_COMPONENTS)}
BASELINE_LABEL = "Baseline: prototype cosine, no training"
MEAN = "Mean"
Metric = str  # "miou" | "fb_iou"


def ordered_variants(variants: Iterable[str]) -> list[str]:
    """The paper's order (BA+PCS, BA+SVP+PCS, full) first, then any other variant alphabetically."""
    unique = set(variants)
    known = [name for name in VARIANT_ORDER if name in unique]
    return known + sorted(unique - set(VARIANT_ORDER))


def variant_label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def fold_column(fold: int) -> str:
    return f"Fold{fold}"


def shots(data: ReportData) -> list[int]:
    return sorted({run.key.shot for run in data.evaluations})


def _percent(value: float) -> float:
    return 100.0 * value


def _baseline_rows(runs: list[EvalRun], metric: Metric) -> dict[str, dict[tuple[int, str], float]]:
    """One row when every variant scored the same baseline (the usual case: same encoder, same episodes)."""
    per_variant: dict[str, dict[tuple[int, str], float]] = {}
    for run in runs:
        if run.metrics.baseline is not None:
            cell = (run.key.shot, fold_column(run.key.fold))
            per_variant.setdefault(run.key.variant, {})[cell] = _percent(getattr(run.metrics.baseline, metric))
    merged: dict[tuple[int, str], float] = {}
    for cells in per_variant.values():
        for cell, value in cells.items():
            if cell in merged and not math.isclose(merged[cell], value, abs_tol=1e-9):
                return {f"{BASELINE_LABEL} [{variant_label(v)}]": per_variant[v] for v in ordered_variants(per_variant)}
            merged[cell] = value
    return {BASELINE_LABEL: merged} if merged else {}


def results_table(data: ReportData, metric: Metric = "miou") -> pd.DataFrame:
    """Paper Tables 1-2: rows = variants (+ baseline), columns = (shot, Fold0…FoldN | Mean), in percent."""
    rows: dict[str, dict[tuple[int, str], float]] = {}
    by_variant: dict[str, list[EvalRun]] = {}
    for run in data.evaluations:
        by_variant.setdefault(run.key.variant, []).append(run)
    for variant in ordered_variants(by_variant):
        rows[variant_label(variant)] = {
            (run.key.shot, fold_column(run.key.fold)): _percent(getattr(run.metrics, metric))
            for run in by_variant[variant]
        }
    rows.update(_baseline_rows(data.evaluations, metric))
    columns: list[tuple[int, str]] = []
    for shot in shots(data):
        folds = sorted({run.key.fold for run in data.evaluations if run.key.shot == shot})
        columns += [(shot, fold_column(fold)) for fold in folds] + [(shot, MEAN)]
    table = pd.DataFrame.from_dict(rows, orient="index", dtype=float)
    table = table.reindex(columns=pd.MultiIndex.from_tuples(columns, names=["shot", "column"]))
    for shot in shots(data):
        fold_columns = [column for column in columns if column[0] == shot and column[1] != MEAN]
        table[(shot, MEAN)] = table[fold_columns].mean(axis=1, skipna=True)
    return table


def ablation_shot(data: ReportData) -> int | None:
    """Table 4 is 1-shot; else the smallest shot that several variants share. None when no shot has two."""
    shared = [shot for shot in shots(data) if len({r.key.variant for r in data.evaluations if r.key.shot == shot}) > 1]
    if not shared:
        return None
    return 1 if 1 in shared else shared[0]


def ablation_table(data: ReportData, shot: int) -> pd.DataFrame:
    """Paper Table 4: component check marks, then mean mIoU and FB-IoU (%) per variant.

    Means are over the folds that every variant was evaluated on (the ablation may run fewer folds than
    the main variant), so the rows compare like with like; the baseline row uses the same folds.
    """
    rows = {}
    runs = [run for run in data.evaluations if run.key.shot == shot]
    variants = ordered_variants(run.key.variant for run in runs)
    common = set.intersection(*({run.key.fold for run in runs if run.key.variant == v} for v in variants))
    runs = [run for run in runs if run.key.fold in common]
    folds = ", ".join(str(fold) for fold in sorted(common))
    for variant in variants:
        mine = [run.metrics for run in runs if run.key.variant == variant]
        components = VARIANT_COMPONENTS.get(variant, set())
        row: dict[str, object] = {name: "✓" if name in components else "" for name in ABLATION_COMPONENTS}
        row["mIoU (%)"] = _percent(sum(m.miou for m in mine) / len(mine))
        row["FB-IoU (%)"] = _percent(sum(m.fb_iou for m in mine) / len(mine))
        row["Folds"] = folds
        rows[variant_label(variant)] = row
    baselines = {run.key.fold: run.metrics.baseline for run in runs if run.metrics.baseline is not None}
    if len(baselines) == len(common):
        row = {name: "✓" if name == "PCS" else "" for name in ABLATION_COMPONENTS}
        row["mIoU (%)"] = _percent(sum(b.miou for b in baselines.values()) / len(baselines))
        row["FB-IoU (%)"] = _percent(sum(b.fb_iou for b in baselines.values()) / len(baselines))
        row["Folds"] = folds
        rows[BASELINE_LABEL] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def per_class_table(data: ReportData, fold: int, shot: int) -> pd.DataFrame:
    """Rows = classes of the fold, one IoU (%) column per variant label; ``Episodes`` from the first variant."""
    runs = [r for r in data.evaluations if r.key.fold == fold and r.key.shot == shot and r.per_class is not None]
    table = pd.DataFrame(columns=["Class id", "Class", "Episodes"])
    for variant in ordered_variants(run.key.variant for run in runs):
        run = next(run for run in runs if run.key.variant == variant)
        assert run.per_class is not None
        part = run.per_class.rename(columns={"class_id": "Class id", "class_name": "Class", "episodes": "Episodes"})
        part = part.assign(**{variant_label(variant): part["iou"] * 100.0})
        part = part.drop(columns=["iou", "intersection", "union"])
        if table.empty:
            table = part
        else:
            table = table.merge(part.drop(columns=["Class", "Episodes"]), on="Class id", how="outer")
    return table.sort_values("Class id").reset_index(drop=True) if not table.empty else table


def fold_shot_pairs(data: ReportData) -> list[tuple[int, int]]:
    """(fold, shot) pairs that have at least one per-class table, shot-major like the results table."""
    pairs = {(run.key.fold, run.key.shot) for run in data.evaluations if run.per_class is not None}
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


def training_summary(data: ReportData) -> pd.DataFrame:
    """One row per trained run: epochs, last train loss, best validation mIoU (%) and its epoch."""
    rank = {variant: index for index, variant in enumerate(ordered_variants(run.key.variant for run in data.train))}
    rows = []
    for run in sorted(data.train, key=lambda r: (rank[r.key.variant], r.key.shot, r.key.fold)):
        history = run.history
        validated = history.dropna(subset=["val_miou"])
        best = validated.loc[validated["val_miou"].idxmax()] if not validated.empty else None
        rows.append(
            {
                "Variant": variant_label(run.key.variant),
                "Shot": run.key.shot,
                "Fold": run.key.fold,
                "Epochs": len(history),
                "Last train loss": history["train_loss"].iloc[-1] if len(history) else math.nan,
                "Best val mIoU (%)": _percent(best["val_miou"]) if best is not None else math.nan,
                "Best epoch": int(best["epoch"]) if best is not None else None,
            }
        )
    return pd.DataFrame(rows)


def distill_summary(data: ReportData) -> pd.DataFrame:
    """One row per stage from ``metrics.json`` (stages with only a history are left out)."""
    rows = []
    for stage in data.distill:
        if stage.metrics is None:
            continue
        metrics = stage.metrics
        before, after = metrics.eval_mse_before, metrics.eval_mse_after
        change = 100.0 * (after - before) / before if before and after is not None else math.nan
        rows.append(
            {
                "Stage": metrics.stage,
                "Image size": metrics.image_size,
                "Epochs": metrics.epochs,
                "Train loss": metrics.train_loss,
                "Eval MSE before": before,
                "Eval MSE after": after,
                "MSE change (%)": change,
                "Teacher": "" if metrics.teacher is None else str(metrics.teacher),
                "Cached targets": "" if metrics.cached_targets is None else str(metrics.cached_targets),
            }
        )
    return pd.DataFrame(rows)


CROSSDOMAIN_LABELS = {"fss": "FSS-1000", "davis": "DAVIS-17"}


def _crossdomain_columns(dataset: str, scores: CrossDomainScores) -> dict[str, float | None]:
    label = CROSSDOMAIN_LABELS.get(dataset, dataset)
    if dataset == "davis":
        return {f"{label} J&F": scores.jf, f"{label} J": scores.j, f"{label} F": scores.f}
    return {f"{label} mIoU": scores.miou, f"{label} FB-IoU": scores.fb_iou}


def crossdomain_table(data: ReportData) -> pd.DataFrame:
    """Table 3: one row per model (variant, training benchmark, fold), FSS-1000 mIoU and DAVIS-17 J&F (%),
    then the baseline's row on the same episodes (when the step scored it)."""
    rows: dict[tuple[str, str, int], dict[str, float | None]] = {}
    baselines: dict[tuple[str, int], dict[str, float | None]] = {}
    for run in data.crossdomain:
        metrics = run.metrics
        rows.setdefault((metrics.variant, metrics.trained_on, metrics.fold), {}).update(
            _crossdomain_columns(metrics.dataset, metrics)
        )
        if metrics.baseline is not None:
            baselines.setdefault((metrics.trained_on, metrics.fold), {}).update(
                _crossdomain_columns(metrics.dataset, metrics.baseline)
            )
    labelled = [
        (f"{variant_label(variant)}, trained on {trained_on} fold {fold}, 1-shot", values)
        for (variant, trained_on, fold), values in sorted(rows.items())
    ]
    labelled += [
        (f"{BASELINE_LABEL} (threshold from {trained_on} fold {fold})", values)
        for (trained_on, fold), values in sorted(baselines.items())
    ]
    columns = list(dict.fromkeys(name for _, values in labelled for name in values))

    def cell(value: float | None) -> float:
        return _percent(value) if value is not None else math.nan

    records = [{"Model": label, **{name: cell(values.get(name)) for name in columns}} for label, values in labelled]
    return pd.DataFrame(records, columns=["Model", *columns])
