"""The paper-scale rehearsal: staging killed and re-run through ``dvc repro``, the teacher cache built by 2 gloo
ranks with one of them SIGKILLed, distillation fed by its workers — at tiny sizes, through the real code paths."""

from __future__ import annotations

import json

import pytest

from benchmarks import scale
from benchmarks.flops import sam_encoder_flops


@pytest.mark.slow
def test_rehearsal_resumes_without_redoing_finished_work(tmp_path):
    out = tmp_path / "scale-rehearsal.json"
    result = scale.run(None, None, out=out)
    figures = json.loads(out.read_text())
    assert figures["sa1b_kill_landed_mid_run"] and figures["teacher_kill_landed_mid_run"]
    size = scale.RehearsalSize()
    # staging: the killed dvc repro had finished some tars; the re-run (dvc repro again) fetched none of them
    assert size.kill_after_tars <= figures["sa1b_tars_staged_at_kill"] < size.tars
    assert figures["sa1b_rerun_rc"] == 0 and figures["sa1b_tars_staged_after_rerun"] == size.tars
    assert figures["sa1b_bytes_redownloaded_after_kill"] == 0
    assert figures["sa1b_bytes_sent_rerun"] < figures["sa1b_tar_bytes"]  # partial tars resumed, not restarted
    # teacher cache: only the shards the killed run left unfinished were computed again
    shards = size.tars * size.images_per_tar // size.shard_images
    assert figures["teacher_rerun_rc"] == 0 and figures["teacher_shards"] == shards
    assert 0 < figures["teacher_shards_valid_at_kill"] < shards
    assert figures["teacher_shards_recomputed_after_kill"] == shards - figures["teacher_shards_valid_at_kill"]
    assert figures["teacher_valid_shards_rebuilt"] == 0
    rows = figures["teacher_rows_per_rank"]
    assert sorted(rows.values()) == [shards, shards] and len(rows) == 2  # each rank built its half: shards[r::2]
    assert figures["teacher_bytes_per_image"] == 256 * (1 + 4 + 9) * 2  # grids 1, 2, 3 of the tiny profile, fp16
    # distillation ran with and without loader workers, to the same result
    assert figures["distill_rc"] == 0 and figures["distill_rc_without_workers"] == 0
    assert figures["distill_eval_mse_after"] == figures["distill_eval_mse_after_without_workers"]
    assert figures["distill_main_thread_ms_per_step"] > 0
    projection = figures["paper_projection"]
    assert projection["disk"]["teacher_bytes_per_image"] == 908_288  # 256 · (9² + 18² + 37²) · 2 B
    assert projection["disk"]["total_bytes"] < projection["disk"]["before_bytes"] / 3
    assert result.summary["paper_upstream_wall_s"] == projection["wall_s"]["total"]


def test_projection_follows_the_written_formula():
    measured = {"decode_ms": {126: 10.0, 252: 10.0, 518: 10.0, 1024: 40.0}, "index_s_per_image": 0.001,
                "manifest_bytes_per_image": 100.0}  # fmt: skip
    node = {**scale.PAPER_NODE, "tars": 1, "images_per_tar": 1000, "tar_bytes": 1e9, "bandwidth_bytes_s": 1e8}
    projection = scale.project(measured, node)
    images = 1000
    assert projection["wall_s"]["stage"] == pytest.approx(1e9 / 1e8 + images * 0.001 / node["download_workers"])
    gpu_s = images * sam_encoder_flops("vit_h") / (8 * 989.4e12 * 0.35)
    assert projection["wall_s"]["teacher"] == pytest.approx(max(gpu_s, images * 0.040 / 64))
    stages = projection["wall_s"]["distill_stages"]
    assert stages["126"]["bound_by"] == "jpeg decoding"
    assert stages["126"]["seconds"] == pytest.approx(15 * images * 0.010 / 64)
    assert projection["disk"]["teacher_cache_bytes"] == images * 908_288


def test_sam_encoder_flops_by_hand():
    # vit_b at 224 px: 14×14 tokens fit one 14×14 window exactly, so windowed and global attention cost the same
    dim, tokens = 768, 196
    by_hand = 2 * tokens * 3 * 256 * dim + 12 * (24 * tokens * dim**2 + 4 * tokens**2 * dim)
    by_hand += 2 * tokens * dim * 256 + 2 * tokens * 9 * 256**2
    assert sam_encoder_flops("vit_b", 224) == by_hand
    assert 5.5e12 < sam_encoder_flops("vit_h", 1024) < 5.8e12  # 2.8 T multiply-adds, the "≈3 T" usually quoted
