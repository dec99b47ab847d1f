"""The report step: collected numbers, the HTML's tables, graceful omissions, errors, atomic writes, and
the page as a real browser renders it (Debian's chromium, headless)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from components import report_tables as tables
from components.report import ReportConfig, collect, git_commit, main, plot_specs, run
from fsdino.errors import InputError
from tests.components.report_fixtures import (
    CROSSDOMAIN,
    EPOCHS,
    FOLDS,
    OVERLAYS_PER_RUN,
    SHOTS,
    STAGES,
    VARIANTS,
    fixture_baseline_miou,
    fixture_fb_iou,
    fixture_miou,
    outputs_tree_fixture,  # noqa: F401  (the outputs_tree fixture)
    read_tables,
    write_evaluation,
    write_outputs_tree,
    write_overlay,
)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The full miniature tree rendered once: (page path, run summary)."""
    outputs = write_outputs_tree(tmp_path_factory.mktemp("rendered") / "outputs")
    out = outputs / "report" / "index.html"
    return out, run(ReportConfig(outputs_dir=outputs, out=out, title="Mini <run>"))


def label(variant: str) -> str:
    return tables.variant_label(variant)


def test_collect_reads_every_artifact(outputs_tree: Path) -> None:
    data = collect(outputs_tree)
    assert [stage.stage for stage in data.distill] == list(STAGES)
    assert all(stage.metrics is not None and len(stage.history) == EPOCHS for stage in data.distill)
    grid = [(v, f, k) for v in VARIANTS for f in FOLDS for k in SHOTS]
    assert sorted((r.key.variant, r.key.fold, r.key.shot) for r in data.train) == sorted(grid)
    assert sorted((r.key.variant, r.key.fold, r.key.shot) for r in data.evaluations) == sorted(grid)
    assert all(len(run.overlays) == OVERLAYS_PER_RUN for run in data.evaluations)
    assert data.datasets == ["synthetic"]


def test_results_table_means_are_the_fold_means(outputs_tree: Path) -> None:
    table = tables.results_table(collect(outputs_tree), "miou")
    for variant in VARIANTS:
        for shot in SHOTS:
            folds = [100 * fixture_miou(variant, fold, shot) for fold in FOLDS]
            row = table.loc[label(variant), shot]
            assert row[[f"Fold{fold}" for fold in FOLDS]].tolist() == pytest.approx(folds)
            assert row["Mean"] == pytest.approx(np.mean(folds))
    baseline = table.loc[tables.BASELINE_LABEL, 1]
    assert baseline["Mean"] == pytest.approx(np.mean([100 * fixture_baseline_miou(f, 1) for f in FOLDS]))
    assert list(table.index) == [label("ba_pcs"), label("full"), tables.BASELINE_LABEL]


def test_results_table_partial_row_and_disagreeing_baselines(tmp_path: Path) -> None:
    outputs = write_outputs_tree(tmp_path / "outputs")
    shutil.rmtree(outputs / "evaluate" / "full" / "fold1_shot1")
    metrics_path = outputs / "evaluate" / "full" / "fold0_shot1" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["baseline"]["miou"] = 0.9
    metrics_path.write_text(json.dumps(metrics))
    table = tables.results_table(collect(outputs), "miou")
    assert table.loc[label("full"), 1]["Mean"] == pytest.approx(100 * fixture_miou("full", 0, 1))
    assert np.isnan(table.loc[label("full"), 1]["Fold1"])
    assert f"{tables.BASELINE_LABEL} [{label('full')}]" in table.index  # one baseline row per variant
    run(ReportConfig(outputs_dir=outputs, out=tmp_path / "page.html"))
    row = read_tables((tmp_path / "page.html").read_text())["results-miou"].row(label("full"))
    assert row[1:4] == [f"{100 * fixture_miou('full', 0, 1):.1f}", "–", f"{100 * fixture_miou('full', 0, 1):.1f}*"]


def test_ablation_uses_one_shot_means(outputs_tree: Path) -> None:
    data = collect(outputs_tree)
    assert tables.ablation_shot(data) == 1
    frame = tables.ablation_table(data, 1)
    full_miou = np.mean([100 * fixture_miou("full", fold, 1) for fold in FOLDS])
    assert frame.loc[label("full"), "mIoU (%)"] == pytest.approx(full_miou)
    assert frame.loc[label("ba_pcs"), "FB-IoU (%)"] == pytest.approx(
        np.mean([100 * fixture_fb_iou("ba_pcs", f, 1) for f in FOLDS])
    )
    assert frame.loc[label("ba_pcs"), ["BA", "SVP", "PCS", "4D Corr."]].tolist() == ["✓", "", "✓", ""]


def test_page_tables_hold_the_numbers(rendered: tuple[Path, dict]) -> None:
    out, summary = rendered
    page = out.read_text()
    found = read_tables(page)
    assert summary["sections"] == [
        "results", "ablation", "crossdomain", "per-class", "distillation", "training", "overlays"
    ]  # fmt: skip
    for section in summary["sections"]:
        assert f'<section id="{section}">' in page and f'href="#{section}"' in page
    miou = found["results-miou"]
    assert miou.rows[0] == ["Method", "1-shot", "5-shot"]
    assert miou.rows[1] == ["Fold0", "Fold1", "Mean"] * 2
    expected = [100 * fixture_miou("ba_pcs", f, k) for k in SHOTS for f in (*FOLDS, None) if f is not None]
    cells = miou.row(label("ba_pcs"))[1:]
    assert [cells[0], cells[1], cells[3], cells[4]] == [f"{value:.1f}" for value in expected]
    assert cells[2] == f"{np.mean(expected[:2]):.1f}"
    assert "<strong>" + f"{100 * fixture_miou('full', 0, 1):.1f}" + "</strong>" in page  # best in bold
    assert found["results-fbiou"].row(label("full"))[1] == f"{100 * fixture_fb_iou('full', 0, 1):.1f}"
    assert found["ablation-table"].row(label("full"))[1:5] == ["✓"] * 4
    per_class = found["per-class-fold1-shot5"]
    assert per_class.rows[0] == ["Class id", "Class", "Episodes", label("ba_pcs"), label("full")]
    assert per_class.rows[2][:2] == ["7", "<cat> & dog"] and "&lt;cat&gt; &amp; dog" in page
    assert [row[0] for row in found["distill-table"].rows[1:]] == [str(stage) for stage in STAGES]
    assert len(found["training-table"].rows) == 1 + len(VARIANTS) * len(FOLDS) * len(SHOTS)
    assert page.count("<svg") == 1 + len(VARIANTS) * len(SHOTS)
    assert summary["overlays"] == 16 and summary["crossdomain"] == ["davis", "fss"]
    assert page.count('<img src="data:image/png;base64,') == 16 + len(CROSSDOMAIN)  # one panel per target
    cross = found["crossdomain-table"]
    assert cross.rows[0] == ["Model", "DAVIS-17 J&F", "DAVIS-17 J", "DAVIS-17 F", "FSS-1000 mIoU", "FSS-1000 FB-IoU"]
    assert cross.rows[1] == ["FS-DINO (full), trained on coco fold 0, 1-shot", "44.0", "41.0", "47.0", "71.2", "80.0"]
    assert cross.rows[2][1:] == ["22.5", "20.0", "25.0", "30.0", "50.0"] and cross.rows[2][0].startswith("Baseline")
    assert "Mini &lt;run&gt;" in page and "<script" not in page
    assert "FSS-1000 classes split by the seeded rule (seed 0), not HSNet&#x27;s lists" in page


def test_missing_parts_are_left_out(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    for fold in FOLDS:
        write_evaluation(outputs, "full", fold, 1, overlays=0)
        (outputs / "evaluate" / "full" / f"fold{fold}_shot1" / "per_class.csv").unlink()
    (outputs / "evaluate" / "full" / "fold9_shot1").mkdir()  # no metrics.json: not a result yet
    summary = run(ReportConfig(outputs_dir=outputs, out=tmp_path / "page.html"))
    page = (tmp_path / "page.html").read_text()
    assert summary["sections"] == ["results"]  # one variant: no ablation; nothing else written
    assert "<svg" not in page and "<img" not in page and 'id="ablation"' not in page
    assert set(read_tables(page)) == {"results-miou", "results-fbiou"}


def test_a_stage_with_only_its_history_still_plots(tmp_path: Path) -> None:
    outputs = write_outputs_tree(tmp_path / "outputs")
    (outputs / "distill" / "stage3" / "metrics.json").unlink()
    data = collect(outputs)
    assert data.distill[2].metrics is None and data.distill[2].history is not None
    assert list(tables.distill_summary(data)["Stage"]) == [1, 2]


def replace_in(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


EVAL_METRICS = "evaluate/full/fold0_shot1/metrics.json"
MALFORMED = {
    "bad JSON": (EVAL_METRICS, lambda p: p.write_text("{miou: 0.5"), r"not valid JSON"),
    "missing key": (EVAL_METRICS, lambda p: replace_in(p, '"miou"', '"mIoU"'), r"miou"),
    "wrong folder": (EVAL_METRICS, lambda p: replace_in(p, '"fold": 0', '"fold": 1'), "says .*fold=1"),
    "missing column": ("train/ba_pcs/fold1_shot5/history.csv", lambda p: replace_in(p, "val_miou", "miou"), "val_miou"),
    "not a number": ("evaluate/ba_pcs/fold0_shot1/per_class.csv", lambda p: replace_in(p, "\n1,", "\nx,"), "class_id"),
    "empty csv": ("distill/stage2/history.csv", lambda p: p.write_text(""), r"not a readable CSV"),
    "distill key": ("distill/stage1/metrics.json", lambda p: replace_in(p, '"epochs"', '"epoch"'), "epochs"),
    "broken png": ("evaluate/full/fold1_shot5/overlays/episode_0001.png", lambda p: p.write_bytes(b"\x89PNG"), "PNG"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_files_name_the_file(tmp_path: Path, case: str) -> None:
    relative, damage, expected = MALFORMED[case]
    outputs = write_outputs_tree(tmp_path / "outputs")
    damage(outputs / relative)
    with pytest.raises(InputError, match=re.escape(str(outputs / relative)) + r".*" + expected):
        run(ReportConfig(outputs_dir=outputs, out=tmp_path / "page.html", overlays_per_run=OVERLAYS_PER_RUN))
    assert not (tmp_path / "page.html").exists()


def test_nothing_to_report_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="outputs folder not found"):
        collect(tmp_path / "absent")
    (tmp_path / "outputs").mkdir()
    with pytest.raises(InputError, match="no pipeline artifacts found"):
        run(ReportConfig(outputs_dir=tmp_path / "outputs", out=tmp_path / "page.html"))


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = tmp_path / "outputs"
    write_evaluation(outputs, "full", 0, 1, overlays=0)
    out = tmp_path / "report" / "index.html"
    out.parent.mkdir()
    out.write_text("old page")
    run(ReportConfig(outputs_dir=outputs, out=out))
    assert sorted(p.name for p in out.parent.iterdir()) == ["index.html"] and out.read_text().startswith("<!DOCTYPE")
    out.write_text("old page")

    def failing_replace(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        run(ReportConfig(outputs_dir=outputs, out=out))
    assert out.read_text() == "old page"  # a reader never sees a half-written page
    assert sorted(p.name for p in out.parent.iterdir()) == ["index.html"]


def test_large_overlays_are_downscaled(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    write_evaluation(outputs, "full", 0, 1, overlays=0)
    write_overlay(outputs / "evaluate" / "full" / "fold0_shot1" / "overlays" / "episode_0000.png", 1, (1800, 600))
    run(ReportConfig(outputs_dir=outputs, out=tmp_path / "page.html", overlay_max_width=300))
    page = (tmp_path / "page.html").read_text()
    match = re.search(r'<img src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert match and (match[2], match[3]) == ("300", "100")
    assert Image.open(io.BytesIO(base64.b64decode(match[1]))).size == (300, 100)


def test_git_commit_is_optional(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert git_commit() is None or re.fullmatch(r"[0-9a-f]{40}", git_commit() or "")

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert git_commit() is None
    outputs = tmp_path / "outputs"
    write_evaluation(outputs, "full", 0, 1, overlays=0)
    run(ReportConfig(outputs_dir=outputs, out=tmp_path / "page.html"))
    assert "<dt>Git commit</dt><dd>unknown</dd>" in (tmp_path / "page.html").read_text()


def test_main_reads_params_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = tmp_path / "outputs"
    write_evaluation(outputs, "full", 0, 1, overlays=0)
    params = tmp_path / "params.yaml"
    params.write_text(f"report:\n  outputs_dir: {outputs}\n  out: {tmp_path / 'a.html'}\n  title: From params\n")
    assert main(["--params", str(params), "--out", str(tmp_path / "b.html")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(tmp_path / "b.html")
    assert "<title>From params</title>" in Path(summary["out"]).read_text()
    params.write_text("report:\n  output_dir: outputs\n")
    assert main(["--params", str(params)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {params}: report.output_dir: unknown key"
    assert main(["--params", str(params), "--section", "absent"]) == 2
    assert "missing section 'absent'" in capsys.readouterr().err


def test_python_m_prints_the_plot_specs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "components.report", "--print-plot-specs"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("plots:\n- distill_loss:\n")


def test_plot_specs_name_real_files_and_columns(outputs_tree: Path) -> None:
    specs = plot_specs(str(outputs_tree), variants=VARIANTS, folds=FOLDS, shots=SHOTS)
    assert len(specs) == 1 + 2 * len(VARIANTS) * len(SHOTS)
    for entry in specs:
        ((name, spec),) = entry.items()
        assert spec["template"] == "linear" and spec["x"] == "epoch"
        for path, column in spec["y"].items():
            header = Path(path).read_text().splitlines()[0].split(",")
            assert {"epoch", column} <= set(header), (name, path)


@pytest.mark.slow
def test_dvc_plots_show_renders_the_specs(tmp_path: Path) -> None:
    """The entries work in a real dvc.yaml: ``dvc plots show`` finds every file of every plot."""
    pytest.importorskip("dvc")
    write_outputs_tree(tmp_path / "outputs")
    specs = plot_specs(variants=VARIANTS, folds=FOLDS, shots=SHOTS)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": specs}, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, capture_output=True)
    shown = subprocess.run([*dvc, "plots", "show", "--json"], cwd=tmp_path, check=True, capture_output=True, text=True)
    result = json.loads(shown.stdout)
    assert not result.get("errors")
    assert list(result["data"]) == [name for entry in specs for name in entry]
    for entry in specs:
        ((name, spec),) = entry.items()
        (plot,) = result["data"][name]
        files = {row["filename"] for row in plot["content"]["data"]["values"]}
        assert len(files) == len(spec["y"]), name


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ci_requires_browser() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.mark.slow
def test_page_renders_in_headless_chromium(rendered: tuple[Path, dict], tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        if ci_requires_browser():
            pytest.fail("CI is set but chromium is missing: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")
    out, summary = rendered
    url = out.resolve().as_uri()

    def chromium(*args: str) -> subprocess.CompletedProcess[str]:
        profile = f"--user-data-dir={tmp_path / 'profile'}"
        command = [binary, *CHROMIUM_FLAGS, profile, *args, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=90)

    dom = chromium("--dump-dom").stdout
    assert len(re.findall(r"<table id=", dom)) == 10
    assert dom.count("<svg") == 1 + len(VARIANTS) * len(SHOTS)
    assert dom.count("<img ") == summary["overlays"] + len(CROSSDOMAIN)
    assert re.search(r'<section id="overlays">', dom) and "results-miou" in dom and "crossdomain-table" in dom

    screenshot = tmp_path / "page.png"
    chromium("--window-size=1280,2400", f"--screenshot={screenshot}")
    assert screenshot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.uint32)
    assert pixels.shape[:2] == (2400, 1280)
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])  # packed RGB
    assert len(colours) > 200, f"only {len(colours)} colours: the page looks blank"
    assert (pixels.min(axis=2) < 200).mean() > 0.02  # text, table borders and plots, not an empty white page


def test_ablation_compares_variants_on_their_common_folds_with_the_baseline(outputs_tree: Path) -> None:
    shutil.rmtree(outputs_tree / "evaluate" / "ba_pcs" / f"fold{FOLDS[1]}_shot1")
    frame = tables.ablation_table(collect(outputs_tree), 1)
    fold = FOLDS[0]
    assert frame.loc[label("full"), "mIoU (%)"] == pytest.approx(100 * fixture_miou("full", fold, 1))
    assert frame.loc[label("ba_pcs"), "mIoU (%)"] == pytest.approx(100 * fixture_miou("ba_pcs", fold, 1))
    assert set(frame["Folds"]) == {str(fold)}
    baseline = frame.loc[tables.BASELINE_LABEL]
    assert baseline["mIoU (%)"] == pytest.approx(100 * fixture_baseline_miou(fold, 1))
    assert baseline[["BA", "SVP", "PCS", "4D Corr."]].tolist() == ["", "", "✓", ""]
