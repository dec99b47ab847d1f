"""``--budget-s``: shares of a wall-clock budget over suites and models, and cases skipped once a share is spent.

A fake clock stands in for time, so that the tests say exactly when a share runs out.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks import caching, distill, dvc_repro, encoder, inference, train_step
from benchmarks.budget import SKIPPED_NOTE, WEIGHTS, Budget
from benchmarks.common import sweep_batches
from benchmarks.results import Record
from benchmarks.run import main
from benchmarks.sizes import SIZES
from benchmarks.timing import Timing

CPU = torch.device("cpu")
TINY = SIZES["tiny"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spent() -> Budget:
    clock = FakeClock()
    budget = Budget(5.0, clock)
    clock.now += 5.0
    return budget


def test_budget_counts_down_and_rejects_non_positive_seconds():
    clock = FakeClock()
    budget = Budget(10.0, clock)
    assert budget.remaining_s() == 10.0 and not budget.expired()
    clock.now += 4.0
    assert budget.remaining_s() == 6.0
    clock.now += 7.0
    assert budget.remaining_s() == 0.0 and budget.expired()
    assert Budget(None).remaining_s() is None and not Budget(None).expired()
    with pytest.raises(ValueError, match="> 0 seconds"):
        Budget(0.0)


def test_shares_follow_the_weights_and_time_left_unused_passes_on():
    clock = FakeClock()
    run = Budget(100.0, clock)
    suites = ["inference", "encoder"]
    first = run.share("inference", suites[1:])
    expected = 100.0 * WEIGHTS["inference"] / (WEIGHTS["inference"] + WEIGHTS["encoder"])
    assert first.remaining_s() == pytest.approx(expected)
    clock.now += 10.0  # inference finished early: encoder gets all that is left
    assert run.share("encoder", []).remaining_s() == pytest.approx(90.0)
    weights = {"a": 1.0, "b": 3.0}
    assert run.share("a", ["b"], weights).remaining_s() == pytest.approx(90.0 / 4)
    assert run.share("unknown", ["other"], {}).remaining_s() == pytest.approx(45.0)  # missing names weigh 1
    clock.now += 90.0
    assert run.share("encoder", []).expired()
    assert Budget(None).share("inference", ["encoder"]).remaining_s() is None


def test_a_sweep_stops_before_a_batch_once_the_budget_is_spent():
    clock = FakeClock()
    started = []

    def case(batch: int) -> Record:
        started.append(batch)
        clock.now += 6.0
        timing = Timing(warmup=0, times_s=(1.0 / batch,))  # throughput grows with the batch: no saturation
        return Record(f"b{batch}", batch, 42, "float32", "items/s", timing=timing)

    records = sweep_batches([1, 2, 4, 8], case, lambda batch: Record(f"b{batch}", batch, 42, "float32", "items/s"))
    assert len(records) == 4  # without a budget every batch runs
    started.clear()
    budget = Budget(10.0, clock)
    records = sweep_batches([1, 2, 4, 8], case, lambda b: Record(f"b{b}", b, 42, "float32", "items/s"), budget)
    assert started == [1, 2]  # the second case started at 6 s < 10 s and was let finish
    assert [record.status for record in records] == ["ok", "ok", "skipped"]
    assert records[-1].name == "b4" and records[-1].note == SKIPPED_NOTE


def test_a_compiled_training_step_is_not_started_without_time_to_compile(monkeypatch):
    clock = FakeClock()
    measured = []

    def fake_variant(name, options, size, runtime):
        measured.append(name)
        return Record(name, 2, 42, "float32", "episodes/s", timing=Timing(warmup=0, times_s=(0.1,)))

    monkeypatch.setattr(train_step, "measure_variant", fake_variant)
    compiling = dataclasses.replace(TINY, try_compile=True)
    result = train_step.run(compiling, CPU, budget=Budget(train_step.COMPILE_RESERVE_S - 1, clock))
    assert measured == ["eager", "channels-last", "fused-adamw"]
    assert [r.status for r in result.records] == ["ok", "ok", "ok", "skipped", "skipped"]
    measured.clear()
    train_step.run(compiling, CPU, budget=Budget(train_step.COMPILE_RESERVE_S + 1, clock))
    assert measured == list(train_step.OPTIONS)


def test_inference_keeps_a_share_for_the_baseline_when_fs_dino_uses_its_own(monkeypatch):
    clock = FakeClock()
    built = []

    def fake_case(model, name, shots, batch, size, runtime, meter):
        clock.now += 4.0
        timing = Timing(warmup=0, times_s=(0.1 / batch,))
        return Record(f"{name}/{shots}-shot/batch-{batch}", batch, 42, "float32", "queries/s", timing=timing,
                      params={"model": name, "shots": shots})  # fmt: skip

    monkeypatch.setattr(inference, "measure_case", fake_case)
    monkeypatch.setattr(inference, "build_model", lambda name, size: built.append(name) or torch.nn.Identity())
    # 40 s: full and compact get a quarter each of what is left when they start, split over K = 1, 2;
    # every case takes 4 s, so each K of each model runs at least its first batch.
    result = inference.run(TINY, CPU, budget=Budget(40.0, clock))
    assert built == ["full", "compact", "baseline"]
    for name in inference.MODELS:
        for shots in TINY.shots:
            ran = [r for r in result.records if r.params["model"] == name and r.params["shots"] == shots]
            assert ran[0].status == "ok" and ran[0].batch_size == 1, (name, shots)
    assert result.summary["full_vs_baseline/1-shot"]["batch1_speedup"] is not None
    assert any(record.status == "skipped" for record in result.records)


def test_inference_builds_nothing_once_the_budget_is_spent(monkeypatch):
    monkeypatch.setattr(inference, "build_model", lambda name, size: pytest.fail(f"built {name}"))
    result = inference.run(TINY, CPU, budget=spent())
    assert [r.name for r in result.records] == [f"{m}/{k}-shot/batch-1" for m in inference.MODELS for k in TINY.shots]
    assert {r.status for r in result.records} == {"skipped"}
    assert result.summary["full_vs_baseline/1-shot"]["best_speedup"] is None


@pytest.mark.parametrize(
    ("suite", "names"),
    [
        (caching, ["full/1-shot/cached", "full/1-shot/uncached", "full/2-shot/cached", "full/2-shot/uncached"]),
        (distill, list(distill.CASES)),
        (train_step, list(train_step.OPTIONS)),
        (encoder, [f"{TINY.encoder}/batch-1"]),
    ],
    ids=["caching", "distill", "train", "encoder"],
)
def test_every_suite_skips_the_cases_it_has_no_time_for(suite, names):
    torch.set_num_threads(1)
    result = suite.run(TINY, CPU, budget=spent())
    skipped = [record for record in result.records if record.status == "skipped"]
    assert [record.name for record in skipped] == names
    assert all(record.note == SKIPPED_NOTE for record in skipped)
    assert all(value is None for key, value in result.summary.items() if key.endswith("speedup"))


def test_the_dvc_suite_runs_no_repro_without_time_left(monkeypatch):
    monkeypatch.setattr(dvc_repro, "timed_repro", lambda *args: pytest.fail("ran dvc repro"))
    result = dvc_repro.run(TINY, CPU, budget=spent())
    assert [record.status for record in result.records] == ["skipped", "skipped"]
    assert result.summary["first_repro_wall_s"] is None


def test_cli_records_each_suites_share_and_rejects_a_non_positive_budget(tmp_path):
    written = main(["--size", "tiny", "--suite", "encoder", "--device", "cpu", "--threads", "1",
                    "--out", str(tmp_path), "--budget-s", "600"])  # fmt: skip
    doc = json.loads(written[0].read_text())
    assert doc["settings"]["budget"]["budget_s"] == pytest.approx(600.0, abs=1.0)
    assert 0 < doc["settings"]["budget"]["left_s"] < 600
    assert all(record["status"] == "ok" for record in doc["records"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    with pytest.raises(SystemExit):
        main(["--budget-s", "0"])
