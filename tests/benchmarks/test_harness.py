"""The benchmark harness at tiny sizes: timing, memory, FLOP formula, schema, baseline, suites and CLI.

These tests check behaviour (keys, shapes, counts, files), never speed.
"""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest
import timm
import torch

from benchmarks import caching, distill, train_step
from benchmarks.baseline import build_dual_model_baseline
from benchmarks.common import episode_inputs
from benchmarks.dvc_repro import copy_repository
from benchmarks.encoder import counted_flops
from benchmarks.flops import VitShape, bf16_peak_tflops, dinov2_forward_flops, vit_forward_flops
from benchmarks.report import markdown
from benchmarks.results import Record, document, environment, output_stem, validate_document
from benchmarks.run import main
from benchmarks.sizes import SIZES
from benchmarks.timing import PeakMemory, Timing, cpu_peak_supported, measure

CPU = torch.device("cpu")
TINY = SIZES["tiny"]


@pytest.fixture
def one_thread():
    """One torch thread: the CI machine is shared, and oversubscribed threads make tiny runs crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_measure_runs_warmup_then_timed_iterations_and_reports_the_median():
    calls = []
    timing = measure(lambda: calls.append(1), CPU, warmup=2, iterations=3)
    assert len(calls) == 5 and len(timing.times_s) == 3 and timing.warmup == 2
    assert timing.median_s == statistics.median(timing.times_s)
    summary = timing.to_dict()
    assert set(summary) == {"warmup", "iterations", "median_s", "min_s", "max_s", "times_s"}
    assert summary["iterations"] == 3 and summary["min_s"] <= summary["median_s"] <= summary["max_s"]
    with pytest.raises(ValueError, match="iterations"):
        measure(lambda: None, CPU, warmup=0, iterations=0)


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs /proc/self/clear_refs (Linux)")
def test_cpu_peak_memory_sees_an_allocation_made_after_start():
    meter = PeakMemory(CPU).start()
    meter.reset_peak()
    block = torch.ones(16 * 2**20)  # 64 MiB, written so that it is resident
    assert meter.peak_bytes() >= 60 * 2**20
    assert meter.kind == "cpu_peak_rss" and block.sum() > 0


def test_flop_formula_matches_a_hand_count():
    # D = 8, p = 2, 4×4 image: P = 4 patches, N = 5 tokens, L = 2 blocks, r = 4.
    # patch embedding 2·4·(3·2²)·8 = 768; per block: qkv 2·3·5·64 = 1920, QKᵀ 2·25·8 = 400, AV 400,
    # projection 2·5·64 = 640, MLP 2·2·4·5·64 = 5120 → 8480; total 768 + 2·8480 = 17728 per image.
    shape = VitShape(embed_dim=8, depth=2, patch_size=2)
    assert vit_forward_flops(shape, 4) == 17728
    assert vit_forward_flops(shape, 4, batch=3) == 3 * 17728
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit_forward_flops(shape, 5)


def test_flop_formula_matches_torch_flop_counter_on_a_tiny_timm_vit():
    vit = timm.create_model(
        "vit_small_patch14_dinov2", img_size=56, num_classes=0, dynamic_img_size=True, depth=2, embed_dim=64,
        num_heads=2,
    ).eval()  # fmt: skip
    analytic = vit_forward_flops(VitShape(embed_dim=64, depth=2), 56)
    assert counted_flops(vit, 56, CPU) == pytest.approx(analytic, rel=0.03)
    assert all(block.attn.fused_attn == timm.layers.use_fused_attn() for block in vit.blocks)  # restored


def test_dinov2_flops_and_gpu_peaks_are_looked_up_by_name():
    # ViT-B at 518 px: 37² + 1 = 1370 tokens → ≈ 0.3 TFLOP per image.
    assert dinov2_forward_flops("vit_base_patch14_dinov2", 518) == pytest.approx(0.3e12, rel=0.1)
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert bf16_peak_tflops("NVIDIA GH200 480GB") == pytest.approx(989.4)
    assert bf16_peak_tflops("Some Unknown GPU") is None


def _document(records: list[Record]) -> dict:
    return document(
        suite="inference", size="tiny", environment=environment(CPU, None), settings={}, records=records,
        summary={"ratio": 1.0},
    )  # fmt: skip


def test_documents_follow_the_schema_and_violations_are_named():
    ok = Record("m/1-shot/batch-1", 1, 42, "float32", "queries/s", timing=Timing(0, (0.5, 0.25, 1.0)))
    oom = Record("m/1-shot/batch-2", 2, 42, "float32", "queries/s", status="oom", note="out of memory")
    doc = _document([ok, oom])
    validate_document(json.loads(json.dumps(doc)))
    assert doc["records"][0]["throughput"] == pytest.approx(2.0) and doc["records"][1]["throughput"] is None
    assert {"device", "device_name", "torch", "dtype"} <= set(doc["environment"])
    broken = json.loads(json.dumps(doc))
    del broken["records"][0]["median_s"]
    broken["records"][1]["status"] = "slow"
    with pytest.raises(ValueError, match=r"median_s(.|\n)*status 'slow'"):
        validate_document(broken)


def test_output_names_carry_device_date_and_suite_and_never_overwrite(tmp_path):
    first = output_stem(tmp_path, CPU, "caching")
    assert first.name.startswith("cpu-") and first.name.endswith("-caching")
    first.with_suffix(".json").write_text("{}")
    assert output_stem(tmp_path, CPU, "caching").name == f"{first.name}-2"


def test_dual_model_baseline_builds_at_tiny_size_and_is_batch_correct(one_thread):
    model = build_dual_model_baseline(
        dino_name=TINY.baseline_encoder, image_size=TINY.image_size, sam_arch="tiny", sam_image_size=32
    )
    query, support, masks = episode_inputs(2, 2, TINY.image_size, CPU)
    logits = model(query, support, masks).mask_logits
    assert logits.shape == (2, 1, TINY.image_size, TINY.image_size)
    alone = model(query[1:], support[1:], masks[1:]).mask_logits
    torch.testing.assert_close(logits[1:], alone, atol=1e-4, rtol=1e-4)
    points = model.point_prompts(query, support, masks)
    assert points.shape == (2, 1, 2) and bool(((points >= 0) & (points <= 32)).all())
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_caching_suite_gives_the_same_masks_with_and_without_the_cache(one_thread):
    result = caching.run(TINY, CPU)
    assert [record.name for record in result.records] == [
        "full/1-shot/cached", "full/1-shot/uncached", "full/2-shot/cached", "full/2-shot/uncached",
    ]  # fmt: skip
    assert all(record.status == "ok" and record.batch_size == TINY.caching_queries for record in result.records)
    assert all(record.params["max_abs_logit_difference"] < 1e-4 for record in result.records)
    assert set(result.summary) == {"cache_speedup/1-shot", "cache_speedup/2-shot"}


def test_distill_suite_times_the_real_loop_with_cached_and_online_targets(one_thread):
    result = distill.run(TINY, CPU)
    names = [record.name for record in result.records]
    assert names == ["online/3-blocks", "cached/3-blocks", "cached/full-depth"]  # no autocast on the CPU
    assert all(record.status == "ok" and len(record.timing.times_s) == TINY.iterations for record in result.records)
    assert [record.params["student_blocks"] for record in result.records] == [3, 3, 12]
    assert result.summary["cached_over_online_speedup"] > 0


def test_train_suite_records_every_variant_and_skips_compile_when_asked(one_thread):
    result = train_step.run(TINY, CPU)
    fused = next(record for record in result.records if record.name == "fused-adamw")
    assert fused.params["fused_adamw"] is True and fused.params["compile"] is False
    status = {record.name: record.status for record in result.records}
    assert list(status) == list(train_step.OPTIONS)
    assert status["eager"] == status["channels-last"] == status["fused-adamw"] == "ok"  # torch fuses on the CPU
    assert status["compile"] == status["all"] == "skipped"
    assert result.summary["fastest"] in status


def test_cli_writes_a_json_and_a_markdown_table_per_suite(tmp_path):
    written = main(["--size", "tiny", "--suite", "inference,encoder", "--device", "cpu", "--threads", "1",
                    "--out", str(tmp_path)])  # fmt: skip
    assert [path.name.rsplit("-", 1)[1] for path in written] == ["inference.json", "encoder.json"]
    inference = json.loads(written[0].read_text())
    validate_document(inference)
    assert inference["size"] == "tiny" and inference["settings"]["size"]["image_size"] == TINY.image_size
    models = {record["params"]["model"] for record in inference["records"]}
    assert models == {"full", "compact", "baseline"}
    assert "full_vs_baseline/2-shot" in inference["summary"]
    table = written[0].with_suffix(".md").read_text()
    assert "| case |" in table and all(f"`{r['name']}`" in table for r in inference["records"])
    encoder = json.loads(written[1].read_text())
    assert encoder["summary"]["analytic_over_counted"] == pytest.approx(1.0, rel=0.03)
    assert markdown(encoder).startswith("### `encoder`")


def test_cli_rejects_unknown_suites():
    with pytest.raises(SystemExit):
        main(["--suite", "inference,nope"])


def test_dvc_suite_copies_the_repository_without_outputs_into_a_fresh_git_repo(tmp_path):
    copy_repository(tmp_path)
    assert (tmp_path / "dvc.yaml").is_file() and (tmp_path / "params.yaml").is_file()
    assert (tmp_path / "fsdino/models/fsdino.py").is_file() and not (tmp_path / "outputs").exists()
    assert "remote" not in (tmp_path / ".dvc/config").read_text()
    log = subprocess.run(["git", "log", "--oneline"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 1
