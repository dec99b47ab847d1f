"""Report step: turn the pipeline's artifacts into one self-contained HTML dashboard.

Reads what exists under ``outputs/`` (see ``docs/artifacts.md``) and writes ``outputs/report/index.html``
atomically; the page needs no server and no network (see ``docs/report.md``).

    python -m components.report --params params.yaml --section report
    python -m components.report --outputs-dir outputs --out outputs/report/index.html
    python -m components.report --print-plot-specs      # the ``plots:`` entries for dvc.yaml
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.params import DEFAULT_PARAMS, section_values, validate
from components.report_config import ReportConfig
from components.report_data import ReportData, collect
from components.report_html import page, sections
from components.report_tables import VARIANT_ORDER, ordered_variants
from fsdino.data.imageio import write_text_atomic
from fsdino.errors import InputError

__all__ = ["ReportConfig", "ReportData", "collect", "main", "plot_specs", "run"]


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None outside a repository or without git."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def run(config: ReportConfig) -> dict[str, Any]:
    """Collect, render, write atomically; return a JSON-able summary of what the page shows."""
    data = collect(config.outputs_dir)
    if data.is_empty:
        raise InputError(
            f"{config.outputs_dir}: no pipeline artifacts found "
            "(expected distill/, train/ or evaluate/ as listed in docs/artifacts.md)"
        )
    found = sections(data, config.overlays_per_run, config.overlay_max_width)
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = page(data, found, title=config.title, generated=generated, commit=git_commit())
    write_text_atomic(config.out, text)
    return {
        "out": str(config.out),
        "bytes": len(text.encode("utf-8")),
        "sections": list(found),
        "variants": ordered_variants(run.key.variant for run in data.evaluations),
        "evaluations": len(data.evaluations),
        "crossdomain": [run.metrics.dataset for run in data.crossdomain],
        "train_runs": len(data.train),
        "distill_stages": len(data.distill),
        "overlays": sum(min(len(run.overlays), config.overlays_per_run) for run in data.evaluations),
    }


def plot_specs(
    outputs_dir: str = "outputs",
    *,
    stages: Iterable[int] = (1, 2, 3),
    variants: Iterable[str] = VARIANT_ORDER,
    folds: Iterable[int] = (0, 1, 2, 3),
    shots: Iterable[int] = (1, 5),
) -> list[dict[str, dict[str, Any]]]:
    """The top-level ``plots:`` entries of ``dvc.yaml`` for the history CSVs (``dvc plots show``).

    One plot for the distillation loss (the three stages overlaid), then per variant and shot one plot of
    the train loss and one of the validation mIoU, each with a line per fold.
    """
    stages, folds = list(stages), list(folds)
    specs: list[dict[str, dict[str, Any]]] = [
        {
            "distill_loss": {
                "template": "linear",
                "x": "epoch",
                "y": {f"{outputs_dir}/distill/stage{stage}/history.csv": "loss" for stage in stages},
                "title": "Distillation loss per epoch (one line per stage)",
                "x_label": "epoch",
                "y_label": "MSE to SAM features",
            }
        }
    ]
    curves = (("train_loss", "train loss"), ("val_miou", "validation mIoU (fraction)"))
    for variant in variants:
        for shot in shots:
            files = [f"{outputs_dir}/train/{variant}/fold{fold}_shot{shot}/history.csv" for fold in folds]
            for column, label in curves:
                specs.append(
                    {
                        f"{column}_{variant}_shot{shot}": {
                            "template": "linear",
                            "x": "epoch",
                            "y": {path: column for path in files},
                            "title": f"{variant}, {shot}-shot: {label} per epoch (one line per fold)",
                            "x_label": "epoch",
                            "y_label": label,
                        }
                    }
                )
    return specs


def load_config(argv: Sequence[str] | None) -> tuple[ReportConfig | None, argparse.Namespace]:
    """``--params``/``--section`` (read when named, or when ``params.yaml`` exists), then flag overrides."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=None, help=f"params file (default: {DEFAULT_PARAMS})")
    parser.add_argument("--section", default=None, help="section of the params file (default: report)")
    parser.add_argument("--outputs-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--title", default=None)
    parser.add_argument("--overlays-per-run", type=int, default=None)
    parser.add_argument("--overlay-max-width", type=int, default=None)
    parser.add_argument("--print-plot-specs", action="store_true", help="print the dvc.yaml plots entries")
    args = parser.parse_args(argv)
    if args.print_plot_specs:
        return None, args
    values, path, section = section_values(args.params, args.section, "report")
    source, prefix = (str(path), section) if values else ("command line", "")
    for name in ReportConfig.model_fields:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return validate(ReportConfig, values, source, prefix), args


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: prints a one-line JSON summary; an :class:`InputError` prints ``error: …``, exit 2."""
    try:
        config, _ = load_config(argv)
        if config is None:
            print(yaml.safe_dump({"plots": plot_specs()}, sort_keys=False), end="")
            return 0
        summary = run(config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
