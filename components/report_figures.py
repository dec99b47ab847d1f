"""The dashboard's pictures, as text that goes straight into the HTML: inline SVG plots and PNG data URIs.

Plots use matplotlib's object API (``Figure``, no pyplot), so nothing global is opened or leaked and no
display is needed. Each SVG gets its own hash salt: matplotlib derives element ids from it, and several
SVGs inline in one page must not share ids.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, UnidentifiedImageError

from components.report_data import DistillStage, TrainRun
from fsdino.errors import InputError

PANEL_SIZE = (5.0, 3.3)  # inches per panel
MARGINS = (0.8, 0.2, 0.6, 0.35, 0.8)  # left, right, bottom, top, gap between panels (inches)


def figure_to_svg(figure: Figure, salt: str) -> str:
    """The ``<svg>…</svg>`` element of ``figure`` (no XML prolog), text kept as text, no timestamp."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _panels(count: int) -> tuple[Figure, list[Axes]]:
    """``count`` panels side by side with fixed margins in inches (a layout engine would triple the cost)."""
    width, height = PANEL_SIZE[0] * count, PANEL_SIZE[1]
    figure = Figure(figsize=(width, height))
    axes = list(figure.subplots(1, count, squeeze=False)[0])
    left, right, bottom, top, gap = MARGINS
    panel = (width - left - right - gap * (count - 1)) / count
    figure.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, wspace=gap / panel
    )
    return figure, axes


def _plot_stage_losses(axes: Axes, stages: Sequence[DistillStage]) -> None:
    """Stages one after the other on a shared epoch axis, a dashed line at each stage boundary."""
    offset = 0
    for stage in stages:
        assert stage.history is not None
        history = stage.history.sort_values("epoch")
        epochs = history["epoch"] - history["epoch"].min() + 1 + offset
        size = int(history["image_size"].iloc[0])
        axes.plot(epochs, history["loss"], marker="o", markersize=3, label=f"stage {stage.stage} ({size} px)")
        if offset:
            axes.axvline(offset + 0.5, color="0.7", linestyle="--", linewidth=1)
        offset = int(epochs.max())
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="epoch (stages in sequence)", ylabel="distillation loss (MSE)", title="Training loss")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)


def _plot_eval_mse(axes: Axes, stages: Sequence[DistillStage]) -> None:
    labels = [f"stage {stage.stage}" for stage in stages]
    before = [stage.metrics.eval_mse_before for stage in stages if stage.metrics is not None]
    after = [stage.metrics.eval_mse_after for stage in stages if stage.metrics is not None]
    positions = range(len(labels))
    axes.bar([p - 0.2 for p in positions], before, width=0.4, label="before the stage", color="#bbbbbb")
    axes.bar([p + 0.2 for p in positions], after, width=0.4, label="after the stage", color="#1f77b4")
    axes.set_xticks(list(positions), labels)
    axes.set(ylabel="held-out MSE to SAM features", title="Evaluation MSE")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3, axis="y")


def distill_figure(stages: Sequence[DistillStage]) -> str | None:
    """Loss per epoch across stages and eval MSE before/after each stage; None when there is nothing to draw."""
    with_history = [stage for stage in stages if stage.history is not None and len(stage.history)]
    with_mse = [
        stage
        for stage in stages
        if stage.metrics is not None and None not in (stage.metrics.eval_mse_before, stage.metrics.eval_mse_after)
    ]
    count = bool(with_history) + bool(with_mse)
    if not count:
        return None
    figure, axes = _panels(count)
    if with_history:
        _plot_stage_losses(axes[0], with_history)
    if with_mse:
        _plot_eval_mse(axes[-1], with_mse)
    return figure_to_svg(figure, "distill")


def _plot_per_fold(axes: Axes, runs: Sequence[TrainRun], column: str, scale: float) -> bool:
    drawn = False
    for run in runs:
        history = run.history.dropna(subset=[column]).sort_values("epoch")
        if history.empty:
            continue
        axes.plot(history["epoch"], history[column] * scale, marker="o", markersize=3, label=f"fold {run.key.fold}")
        drawn = True
    axes.grid(alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if drawn:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes, color="0.5")
    return drawn


def training_figure(runs: Sequence[TrainRun], title: str, salt: str) -> str:
    """Train loss and validation mIoU (%) per epoch, one line per fold."""
    figure, (loss_axes, miou_axes) = _panels(2)
    _plot_per_fold(loss_axes, runs, "train_loss", 1.0)
    loss_axes.set(xlabel="epoch", ylabel="train loss", title=f"{title}: train loss")
    _plot_per_fold(miou_axes, runs, "val_miou", 100.0)
    miou_axes.set(xlabel="epoch", ylabel="val mIoU (%)", title=f"{title}: validation mIoU")
    return figure_to_svg(figure, salt)


def png_data_uri(path: Path, max_width: int) -> tuple[str, int, int]:
    """``(data URI, width, height)`` of an overlay; images wider than ``max_width`` are downscaled."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.width <= max_width and image.format == "PNG":
                payload, size = path.read_bytes(), image.size  # small enough: embed the file as it is
            else:
                size = (max_width, max(1, round(image.height * max_width / image.width)))
                size = size if image.width > max_width else image.size
                payload = _encode_png(image.resize(size, Image.Resampling.LANCZOS))
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"{path}: not a readable PNG image") from error
    return "data:image/png;base64," + base64.b64encode(payload).decode("ascii"), size[0], size[1]


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
