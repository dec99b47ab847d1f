"""The ``fsdino`` command, run as a user would: a real subprocess on generated images."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fsdino.checkpoints import save_checkpoint
from fsdino.cli import main
from tests.conftest import tiny_config, write_scene
from tests.filesystems import PAGE, UNWRITABLE, files_under, fill, tmpfs, unwritable

FSDINO = [sys.executable, "-m", "fsdino.cli"]
TINY = ["--encoder", "vit_small_patch14_dinov2", "--image-size", "70"]


def run(*args):
    return subprocess.run([*FSDINO, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def scenes(tmp_path):
    return {name: write_scene(tmp_path, name, size=size) for name, size in [("s1", (90, 120)), ("q1", (100, 80))]}


def test_segment_without_checkpoint_warns_and_writes_mask_and_overlay(tmp_path, scenes):
    (support, mask), (query, _) = scenes["s1"], scenes["q1"]
    out = tmp_path / "out"
    result = run("segment", "--support", support, mask, "--query", query, "--out", out, *TINY)
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" in result.stderr
    written = np.asarray(Image.open(out / "q1_mask.png"))
    assert written.shape == (80, 100)  # the query's original H×W
    assert set(np.unique(written)) <= {0, 255}
    assert Image.open(out / "q1_overlay.png").size == (100, 80)


def test_segment_with_a_checkpoint_and_two_shots(tmp_path, scenes, tiny_models):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, tiny_models["ba_svp_pcs"], tiny_config("ba_svp_pcs"))
    (support, mask), (query, _) = scenes["s1"], scenes["q1"]
    out = tmp_path / "out"
    result = run(
        "segment", "--support", support, mask, "--support", support, mask, "--query", query, support,
        "--checkpoint", checkpoint, "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["q1_mask.png", "q1_overlay.png", "s1_mask.png", "s1_overlay.png"]


def make_bad_inputs(tmp_path, scenes):
    (support, mask), (query, _) = scenes["s1"], scenes["q1"]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(small)
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((120, 90), dtype=np.uint8)).save(empty)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((120, 90), 128, dtype=np.uint8)).save(grey)
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"garbage")
    return {
        "missing image": (["--support", tmp_path / "nope.jpg", mask, "--query", query], "nope.jpg: image not found"),
        "unreadable image": (["--support", support, mask, "--query", junk], "junk.jpg: unreadable image"),
        "mask size": (
            ["--support", support, small, "--query", query],
            "small.png: mask is 10×10 but its image is 90×120",
        ),
        "empty mask": (["--support", support, empty, "--query", query], "empty.png: support mask is empty"),
        "mask values": (["--support", support, grey, "--query", query], "grey.png: mask values must be"),
        "checkpoint": (
            ["--support", support, mask, "--query", query, "--checkpoint", bad_ckpt],
            "bad.pt: not a readable",
        ),
        "image size": (["--support", support, mask, "--query", query, "--image-size", "64"], "--image-size: "),
    }


@pytest.mark.parametrize(
    "case", ["missing image", "unreadable image", "mask size", "empty mask", "mask values", "checkpoint", "image size"]
)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, scenes, case, capsys):
    args, message = make_bad_inputs(tmp_path, scenes)[case]
    out = tmp_path / "out"
    size = ["--encoder", "vit_small_patch14_dinov2"] + ([] if "--image-size" in args else ["--image-size", "70"])
    assert main(["segment", *map(str, args), "--out", str(out), *size]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith("fsdino: error: ") and message in lines[-1], lines
    assert not out.exists()


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path, scenes):
    (support, _), (query, query_mask) = scenes["s1"], scenes["q1"]
    result = run("segment", "--support", support, query_mask, "--query", query, "--out", tmp_path / "out", *TINY)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fsdino: error: {query_mask}: mask is 100×80 but its image is 90×120 (W×H)"
    ]


def test_info_reports_counts_and_shapes_as_json():
    result = run("info", "--variant", "ba_svp_pcs", *TINY, "--shots", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["shapes"]["encoder_layer3"] == [1, 384, 5, 5]
    assert report["shapes"]["image_embedding"] == [1, 256, 5, 5]
    assert report["parameters"]["correlation_4d"] == 0
    assert report["parameters"]["semantic_visual_prompt"] > 0
    assert report["parameters"]["total_trainable"] < report["parameters"]["total"]


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_unwritable_out_is_refused_before_the_model_runs(tmp_path, scenes, case, capsys, monkeypatch):
    from fsdino.inference import Segmenter

    def no_model(*_, **__):
        raise AssertionError("the model was built before --out was checked")

    monkeypatch.setattr(Segmenter, "untrained", no_model)
    (support, mask), (query, _) = scenes["s1"], scenes["q1"]
    with unwritable(tmp_path, case) as out:
        assert main(["segment", "--support", str(support), str(mask), "--query", str(query), "--out", str(out)]) == 2
        assert not out.exists()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fsdino: error: {out}: --out "), lines


def test_a_full_disk_leaves_no_mask_without_its_overlay(tmp_path, scenes, capsys):
    (support, mask), (query, _) = scenes["s1"], scenes["q1"]
    with tmpfs(tmp_path / "small") as small:
        out = small / "out"
        out.mkdir()
        fill(small, leave=PAGE)  # room for the mask PNG (one page), not for the overlay
        args = ["segment", "--support", str(support), str(mask), "--query", str(query), "--out", str(out), *TINY]
        assert main(args) == 2
        assert files_under(small) == []
    lines = [line for line in capsys.readouterr().err.splitlines() if "UNTRAINED" not in line]
    assert lines == [
        f"fsdino: error: {out}/q1_mask.png, {out}/q1_overlay.png: cannot write: No space left on device "
        "(nothing was written; free some space or choose another output folder)"
    ]


def test_masks_and_overlays_are_readable_by_others_under_the_usual_umask(tmp_path, scenes):
    (support, mask), (query, _) = scenes["s1"], scenes["q1"]
    previous = os.umask(0o022)
    try:
        args = ["segment", "--support", str(support), str(mask), "--query", str(query), "--out", str(tmp_path / "o")]
        assert main([*args, *TINY]) == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir()}
    assert modes == {"q1_mask.png": 0o644, "q1_overlay.png": 0o644}
