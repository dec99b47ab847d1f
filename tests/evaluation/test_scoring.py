import json

import numpy as np
import pytest
from PIL import Image

from fsdino.cli import main


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
