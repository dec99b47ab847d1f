import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from fsdino.cli import main
from tests.filesystems import UNWRITABLE, files_under, fill, tmpfs, unwritable


def save(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    save(gt / "img1.png", [[1, 1, 0, 2], [1, 255, 0, 2]])
    save(gt / "img2.png", [[2, 2, 0, 0], [0, 0, 0, 0]])
    save(pred / "img1__1.png", [[255, 0, 0, 0], [255, 255, 0, 0]])  # I=2, U=3 (the 255 pixel is ignored)
    save(pred / "img1__2.png", [[0, 0, 0, 1], [0, 0, 0, 1]])  # I=2, U=2
    save(pred / "img2__2.png", [[0, 0, 0, 0], [0, 0, 0, 0]])  # I=0, U=2
    (tmp_path / "pairs.txt").write_text("img1 1\nimg1 2\nimg2 2\n")
    return tmp_path


def test_scores_by_hand(folders, capsys):
    out = folders / "scores"
    args = ["score", "--pred", str(folders / "pred"), "--gt", str(folders / "gt")]
    assert main([*args, "--classes", str(folders / "pairs.txt"), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["class_iou"] == pytest.approx({"1": 2 / 3, "2": 2 / 4})
    assert report["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # background: img1/1 I=4 U=5; img1/2 I=5 U=5; img2/2 I=6 U=8
    assert report["fb_iou"] == pytest.approx(((2 + 2) / (3 + 2 + 2) + (4 + 5 + 6) / (5 + 5 + 8)) / 2)
    assert report["episodes"] == 3
    assert json.loads(capsys.readouterr().out)["miou"] == report["miou"]


def test_a_missing_prediction_is_named(folders, capsys):
    (folders / "pred" / "img2__2.png").unlink()
    args = ["score", "--pred", str(folders / "pred"), "--gt", str(folders / "gt")]
    assert main([*args, "--classes", str(folders / "pairs.txt")]) == 2
    assert "img2__2.png: predicted mask not found" in capsys.readouterr().err


def test_a_non_binary_prediction_is_refused(folders, capsys):
    save(folders / "pred" / "img2__2.png", [[0, 7, 0, 0], [0, 0, 0, 0]])
    args = ["score", "--pred", str(folders / "pred"), "--gt", str(folders / "gt")]
    assert main([*args, "--classes", str(folders / "pairs.txt")]) == 2
    assert "expected a binary mask" in capsys.readouterr().err


def score_args(folders, out):
    return ["score", "--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--classes",
            str(folders / "pairs.txt"), "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_unwritable_out_is_one_line_and_exit_2(folders, capsys, case):
    with unwritable(folders, case) as out:
        assert main(score_args(folders, out)) == 2
        assert not out.exists()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fsdino: error: {out}: --out "), lines


def test_a_full_disk_is_one_line_exit_2_and_writes_neither_file(folders, capsys):
    with tmpfs(folders / "small") as small:
        out = small / "scores"
        out.mkdir()
        fill(small)
        assert main(score_args(folders, out)) == 2
        assert files_under(small) == []  # neither metrics.json nor per_pair.csv, no temporary
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"fsdino: error: {out}/metrics.json, {out}/per_pair.csv: cannot write: No space left on device "
        "(nothing was written; free some space or choose another output folder)"
    ]


def test_outputs_are_readable_by_others_under_the_usual_umask(folders):
    previous = os.umask(0o022)
    try:
        assert main(score_args(folders, folders / "scores")) == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (folders / "scores").iterdir()}
    assert modes == {"metrics.json": 0o644, "per_pair.csv": 0o644}
