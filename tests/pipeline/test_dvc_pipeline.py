"""``dvc repro`` for real: a copy of the repository with the tiny profile, in a fresh git repo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.profile import render

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd), "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The tracked files of this repository plus the tiny profile as params.yaml, in a new git repo."""
    target = tmp_path_factory.mktemp("repo")
    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listing, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in [*tracked, "dvc.yaml", ".dvc/config", ".dvcignore"]:
        if name.startswith("outputs/") and not name.endswith(".gitignore"):
            continue  # pipeline outputs of this checkout (a fresh clone has none)
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "profiles").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "tests/pipeline/tiny_profile.yaml", target / "profiles/tiny.yaml")
    (target / "params.yaml").write_text(render("tiny", target / "profiles"))
    (target / ".dvc/config").write_text("[core]\n    autostage = true\n    no_scm = false\n")
    for command in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], cwd=target, check=True
    )
    return target


@pytest.fixture(scope="module")
def reproduced(workspace: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", "repro"], workspace)


def test_dvc_repro_runs_every_stage(workspace, reproduced):
    assert reproduced.returncode == 0, reproduced.stdout[-3000:] + reproduced.stderr[-3000:]
    metrics = json.loads((workspace / "outputs/evaluate/full/fold0_shot1/metrics.json").read_text())
    assert metrics["fold"] == 0 and metrics["shot"] == 1 and metrics["episodes"] == 8
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["baseline"]["threshold"] is not None
    distill = [json.loads((workspace / f"outputs/distill/stage{n}/metrics.json").read_text()) for n in (1, 2, 3)]
    assert [d["image_size"] for d in distill] == [14, 28, 42]
    assert distill[1]["eval_mse_before"] == pytest.approx(distill[0]["eval_mse_after"])
    assert (workspace / "outputs/train/full/fold0_shot1/best.pt").is_file()
    ablation = json.loads((workspace / "outputs/evaluate/ba_svp_pcs/fold0_shot1/metrics.json").read_text())
    assert ablation["variant"] == "ba_svp_pcs" and ablation["episodes"] == 8
    memo = json.loads((workspace / "outputs/features/manifest.json").read_text())
    assert memo["memo"] is True and memo["entries"] > 0
    trained = json.loads((workspace / "outputs/train/full/fold0_shot1/metrics.json").read_text())
    assert trained["best_epoch"] >= 0 and "feature_memo" not in trained  # run-dependent counts stay out of outputs
    lines = reproduced.stdout.splitlines()
    printed = [json.loads(line) for line in lines if line.startswith("{") and "feature_memo" in line]
    assert printed and all(summary["feature_memo"]["misses"] == 0 for summary in printed)  # every train step
    fss = json.loads((workspace / "outputs/evaluate/crossdomain/fss/metrics.json").read_text())
    davis = json.loads((workspace / "outputs/evaluate/crossdomain/davis/metrics.json").read_text())
    assert fss["episodes"] == 2 and 0.0 <= fss["miou"] <= 1.0  # the one test class's two images
    assert davis["episodes"] == 2 * davis["objects"] and 0.0 <= davis["J&F"] <= 1.0
    page = (workspace / "outputs/report/index.html").read_text()
    assert "<table" in page and 'id="ablation"' in page and 'id="crossdomain-table"' in page
    registration = json.loads((workspace / "outputs/register/model.json").read_text())
    assert registration["name"] == "fsdino" and registration["version"] == 1
    assert registration["aliases"] == ["challenger", "champion"] and registration["promoted"] is True
    assert registration["mean_miou"] == pytest.approx(metrics["miou"])


def test_a_second_repro_does_nothing(workspace, reproduced):
    again = run([sys.executable, "-m", "dvc", "repro"], workspace)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout
    status = run([sys.executable, "-m", "dvc", "status"], workspace)
    assert "up to date" in status.stdout, status.stdout


def test_changing_evaluation_params_reruns_only_evaluation_report_and_registration(workspace, reproduced):
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("overlays: 2", "overlays: 1"))
    result = run([sys.executable, "-m", "dvc", "repro"], workspace)
    assert result.returncode == 0, result.stderr
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"evaluate@full-0-1", "ablation_evaluate@ba_svp_pcs-0-1", "report", "register"}


SCORES = "outputs/metrics/evaluate/full/fold0_shot1.json"


def experiments(table: object) -> list[dict]:
    """Every experiment entry (a dict with ``name`` and ``data``) anywhere in ``dvc exp show --json``."""
    found = []
    if isinstance(table, dict):
        if table.get("name") and isinstance(table.get("data"), dict) and "metrics" in table["data"]:
            found.append(table)
        for value in table.values():
            found += experiments(value)
    elif isinstance(table, list):
        for value in table:
            found += experiments(value)
    return found


def test_dvc_metrics_show_diff_and_exp_run_report_the_scores(workspace, reproduced):
    """Last in this module: commits the reproduced workspace, then runs an experiment in it."""
    assert reproduced.returncode == 0
    for command in (["git", "config", "user.name", "t"], ["git", "config", "user.email", "t@t"]):
        subprocess.run(command, cwd=workspace, check=True)
    subprocess.run(["git", "add", "-A"], cwd=workspace, check=True)
    subprocess.run(["git", "commit", "-qm", "reproduced"], cwd=workspace, check=True)

    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], workspace)
    assert shown.returncode == 0, shown.stderr
    files = json.loads(shown.stdout)[""]["data"]
    evaluated = json.loads((workspace / "outputs/evaluate/full/fold0_shot1/metrics.json").read_text())
    assert files[SCORES]["data"] == {
        "miou": evaluated["miou"], "fb_iou": evaluated["fb_iou"], "episodes": 8,
        "baseline_miou": evaluated["baseline"]["miou"], "baseline_fb_iou": evaluated["baseline"]["fb_iou"],
    }  # fmt: skip
    assert files["outputs/metrics/evaluate/ba_svp_pcs/fold0_shot1.json"]["data"]["episodes"] == 8
    fss = files["outputs/metrics/crossdomain/fss.json"]["data"]
    davis = files["outputs/metrics/crossdomain/davis.json"]["data"]
    assert {"miou", "fb_iou", "episodes"} <= set(fss) and {"J", "F", "J&F", "episodes"} <= set(davis)

    experiment = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.loop.lr=0.0005", "-n", "lr5"], workspace)
    assert experiment.returncode == 0, experiment.stdout[-3000:] + experiment.stderr[-3000:]
    ran = {line.split("'")[1] for line in experiment.stdout.splitlines() if line.startswith("Running stage")}
    assert {"train@full-0-1", "evaluate@full-0-1", "crossdomain@fss"} <= ran and "distill_1" not in ran

    table = run([sys.executable, "-m", "dvc", "exp", "show", "--json"], workspace)
    assert table.returncode == 0, table.stderr
    (entry,) = [e for e in experiments(json.loads(table.stdout)) if e["name"] == "lr5"]
    assert entry["data"]["params"]["params.yaml"]["data"]["train"]["loop"]["lr"] == 0.0005
    assert set(entry["data"]["metrics"][SCORES]["data"]) >= {"miou", "fb_iou"}

    diff = run([sys.executable, "-m", "dvc", "metrics", "diff", "--all", "--json"], workspace)  # HEAD → workspace
    assert diff.returncode == 0, diff.stderr
    changes = json.loads(diff.stdout)
    changes = changes.get("diff", changes)
    assert changes[SCORES]["miou"]["old"] == evaluated["miou"]
    assert changes[SCORES]["miou"]["new"] == entry["data"]["metrics"][SCORES]["data"]["miou"]
