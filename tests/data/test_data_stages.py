"""The dataset stages: CLI and params, manifests and split files, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from components import stage_coco, stage_davis, stage_fss, stage_pascal, stage_synthetic
from fsdino.data.benchmark import open_split
from fsdino.data.imageio import write_text_atomic
from fsdino.data.splits import read_pairs
from tests.data.mini_datasets import COCO_CATEGORY_IDS, DAVIS_SEQUENCES, FSS_CLASSES, FSS_IMAGES_PER_CLASS
from tests.filesystems import run_in_empty_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty folder, so that a repository ``params.yaml`` cannot leak into these tests."""
    run_in_empty_folder(tmp_path, monkeypatch)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_pascal_stage_writes_splits_deterministically(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "staged"
    assert stage_pascal.main(["--root", str(voc_root), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "pascal" and manifest["folds"]["1"]["novel"] == [6, 7, 8, 9, 10]
    assert manifest["splits"]["fold1_val"]["pairs"] == 5 and manifest["splits"]["fold0_train"]["pairs"] == 7
    assert (out / "splits" / "fold1_val.txt").read_text().splitlines()[0] == "2008_000002 6"
    first = _files(out)
    assert stage_pascal.main(["--root", str(voc_root), "--out", str(out)]) == 0
    assert _files(out) == first
    split = open_split(out, "fold1_val")
    assert split.pairs == read_pairs(out / "splits" / "fold1_val.txt") and split.protocol == "walk"


def test_params_section_and_flag_override(voc_root: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"pascal_data:\n  root: {voc_root}\n  out: {tmp_path / 'a'}\n  folds: [1]\n")
    assert stage_pascal.main(["--params", str(params), "--section", "pascal_data", "--out", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in (tmp_path / "b" / "splits").iterdir()) == ["fold1_train.txt", "fold1_val.txt"]


def test_bad_config_and_missing_folders_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stage_pascal.main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in _error_line(capsys)
    params = tmp_path / "params.yaml"
    params.write_text("stage_pascal:\n  root: x\n  colour: red\n")
    assert stage_pascal.main(["--params", str(params)]) == 2
    assert "stage_pascal.colour: unknown key" in _error_line(capsys)
    assert stage_pascal.main(["--params", str(params), "--section", "other"]) == 2
    assert "missing section 'other'" in _error_line(capsys)


def test_bad_mask_leaves_nothing_written(voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask = voc_root / "VOC2012" / "SegmentationClassAug" / "2008_000004.png"
    mask.write_bytes(b"not a png")
    out = tmp_path / "staged"
    assert stage_pascal.main(["--root", str(voc_root), "--out", str(out)]) == 2
    assert "2008_000004.png" in _error_line(capsys)
    assert not out.exists() or not any(out.rglob("*"))


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "splits" / "fold0_val.txt"
    target.parent.mkdir()
    target.write_text("old\n")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in target.parent.iterdir()] == ["fold0_val.txt"]


def test_coco_stage(coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "coco"
    assert stage_coco.main(["--root", str(coco_root), "--out", str(out), "--folds", "[0]"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["folds"]["0"]["novel"] == COCO_CATEGORY_IDS[::4] and manifest["protocol"] == "class_uniform"
    assert manifest["splits"]["fold0_val"]["pairs"] == 4 and manifest["splits"]["fold0_train"]["pairs"] == 2
    split = open_split(out, "fold0_val")
    assert split.source.load_mask(split.source.index_of("COCO_val2014_000000000002"), 1).any()  # crowd included
    (coco_root / "annotations" / "instances_train2014.json").unlink()
    assert stage_coco.main(["--root", str(coco_root), "--out", str(tmp_path / "x")]) == 2
    assert "instances_train2014.json: annotation file not found" in _error_line(capsys)


def test_fss_stage(fss_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "fss"
    assert stage_fss.main(["--root", str(fss_root), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    counts = {name: manifest["splits"][name]["pairs"] for name in ("train", "val", "test")}
    assert counts == {"train": 13 * FSS_IMAGES_PER_CLASS, "val": 6 * FSS_IMAGES_PER_CLASS, "test": 18}
    assert manifest["split_rule"] == "seeded rule (seed 0)"
    split = open_split(out, "test")
    assert len(split.source) == 18 and split.protocol == "every_query"
    lists = fss_root / "splits" / "fss"  # HSNet's lists are picked up when present
    lists.mkdir(parents=True)
    for file_name, names in (
        ("trn.txt", FSS_CLASSES[:20]),
        ("val.txt", FSS_CLASSES[20:22]),
        ("test.txt", FSS_CLASSES[22:]),
    ):
        (lists / file_name).write_text("\n".join(names) + "\n")
    assert stage_fss.main(["--root", str(fss_root), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_rule"].startswith("official lists") and manifest["splits"]["test"]["pairs"] == 9


def test_fss_stage_with_required_official_lists_refuses_the_seeded_split(
    fss_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, required = tmp_path / "staged", ["--require-official-lists", "true"]
    assert stage_fss.main(["--root", str(fss_root), "--out", str(out), *required]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {fss_root / 'splits' / 'fss' / 'trn.txt'}: HSNet's FSS-1000 class list not found")
    assert "\n" not in error and not out.exists()
    lists = fss_root / "splits" / "fss"
    lists.mkdir(parents=True)
    (lists / "trn.txt").write_text("\n".join(FSS_CLASSES[:20]) + "\n")
    assert stage_fss.main(["--root", str(fss_root), "--out", str(out), *required]) == 2
    assert f"{lists / 'val.txt'}: HSNet's FSS-1000 class list not found" in capsys.readouterr().err
    (lists / "val.txt").write_text("\n".join(FSS_CLASSES[20:22]) + "\n")
    (lists / "test.txt").write_text("\n".join(FSS_CLASSES[22:]) + "\n")
    assert stage_fss.main(["--root", str(fss_root), "--out", str(out), *required]) == 0
    assert json.loads((out / "manifest.json").read_text())["split_rule"] == f"official lists ({lists})"
    elsewhere = ["--official-lists", str(tmp_path / "lists")]  # a named folder is the one required
    assert stage_fss.main(["--root", str(fss_root), "--out", str(out), *required, *elsewhere]) == 2
    assert f"{tmp_path / 'lists' / 'trn.txt'}: HSNet's FSS-1000 class list not found" in capsys.readouterr().err


def test_davis_stage(davis_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "davis"
    assert stage_davis.main(["--root", str(davis_root), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sequences"]["bears"] == {"frames": DAVIS_SEQUENCES["bears"], "objects": [1, 2]}
    assert manifest["splits"]["val"]["pairs"] == 2 * (3 + 2)
    annotation = davis_root / "Annotations" / "480p" / "dogs-jump" / "00001.png"
    Image.open(annotation).convert("RGB").save(annotation)
    assert stage_davis.main(["--root", str(davis_root), "--out", str(tmp_path / "x")]) == 2
    assert "dogs-jump/00001.png: expected a single-channel or palette PNG" in _error_line(capsys)


def test_synthetic_stage_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    command = [sys.executable, "-m", "components.stage_synthetic", "--out", str(out), "--num-images", "16"]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dataset"] == "synthetic"
    assert (out / "VOC2012" / "JPEGImages" / "synth_000015.jpg").is_file()
    assert sorted(p.name for p in (out / "splits").iterdir())[:2] == ["fold0_train.txt", "fold0_val.txt"]
    bad = subprocess.run(
        [*command, "--min-size", "300"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: command line") and "max_size" in bad.stderr


@pytest.mark.slow
def test_default_synthetic_benchmark_is_quick_and_covers_every_fold(tmp_path: Path) -> None:
    start = time.perf_counter()
    manifest = stage_synthetic.run(stage_synthetic.SyntheticStageConfig(out=tmp_path / "a"))
    assert time.perf_counter() - start < 60
    assert manifest["num_train_images"] + manifest["num_val_images"] == 400
    for fold in range(4):
        pairs = read_pairs(tmp_path / "a" / "splits" / f"fold{fold}_val.txt")
        assert {class_id for _, class_id in pairs} == set(range(5 * fold + 1, 5 * fold + 6))


def test_the_documented_command_with_the_whole_pipeline_params_yaml(voc_root: Path, tmp_path: Path) -> None:
    """docs/data.md's ``--params params.yaml --section …`` line, run as written on the repository's params.yaml."""
    line = next(
        line for line in (REPO / "docs" / "data.md").read_text().splitlines()
        if line.startswith("python -m components.stage_pascal --params")
    )  # fmt: skip
    workdir = Path.cwd()
    shutil.copyfile(REPO / "params.yaml", workdir / "params.yaml")
    arguments = shlex.split(line)[1:]
    (workdir / arguments[arguments.index("--root") + 1]).parent.mkdir(parents=True)
    shutil.copytree(voc_root, workdir / arguments[arguments.index("--root") + 1])
    result = subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    out = workdir / arguments[arguments.index("--out") + 1]
    assert json.loads((out / "manifest.json").read_text())["dataset"] == "pascal"


def test_a_nested_section_is_named_with_dots(voc_root: Path, tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"benchmark:\n  kind: pascal\n  pascal:\n    root: {voc_root}\n    out: {tmp_path / 'a'}\n"
                      "    folds: [1]\n")  # fmt: skip
    assert stage_pascal.main(["--params", str(params), "--section", "benchmark.pascal"]) == 0
    assert sorted(p.name for p in (tmp_path / "a" / "splits").iterdir()) == ["fold1_train.txt", "fold1_val.txt"]
    capsys.readouterr()
    assert stage_pascal.main(["--params", str(params), "--section", "benchmark.coco"]) == 2
    assert _error_line(capsys) == (
        f"error: {params}: missing section 'benchmark.coco' (top-level sections: benchmark; name a nested one "
        "with dots, as benchmark.pascal)\n"
    )


@pytest.mark.parametrize("case", ["garbage file", "size differs from the JSON"])
def test_coco_staging_reads_every_image_header(
    coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    image = sorted((coco_root / "val2014").iterdir())[0]
    if case == "garbage file":
        image.write_bytes(b"not a jpeg at all")
        expected = f"error: {image}: cannot read the file ("
    else:
        Image.new("RGB", (16, 16)).save(image, format="JPEG")
        expected = f"error: {image}: image is 16x16 but instances_val2014.json says 32x24 (expected the JSON's"
    out = tmp_path / "staged"
    assert stage_coco.main(["--root", str(coco_root), "--out", str(out)]) == 2
    assert _error_line(capsys).startswith(expected)
    assert not out.exists()
