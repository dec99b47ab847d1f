"""The sharded teacher cache: rank split, bad shards named and rebuilt (only they), claims between processes,
targets read in loader workers, and the ``teacher_cache`` step (in one process and under ``torchrun``)."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from components import stage_sa1b
from components import teacher_cache as teacher_cache_step
from components.config import Params
from components.params import read_yaml
from fsdino.config import TeacherConfig
from fsdino.errors import InputError
from fsdino.io.claims import try_claim
from fsdino.models.teacher_builder import build_teacher
from fsdino.training.distill import WithCachedTargets
from fsdino.training.teacher_cache import (
    CacheSpec,
    TeacherTargets,
    build_shards,
    check_shard,
    shard_files,
    shard_rows_by_rank,
    write_index,
)
from tests.launch import ROOT, TORCHRUN_2, run_step
from tests.training.test_distill import Images

KEYS = tuple(f"sa_{i}" for i in range(10))
SPEC = CacheSpec("tiny@64", (3, 4), KEYS, shard_images=4)  # shards of 4, 4 and 2 rows


@pytest.fixture(scope="module")
def teacher():
    return build_teacher(TeacherConfig(arch="tiny", image_size=64))


def build(teacher, cache_dir, shards=range(SPEC.num_shards), spec=SPEC, **options):
    return build_shards(
        lambda: teacher, Images(len(spec.keys), 64), spec, cache_dir, shards=shards, progress=False, **options
    )


def files_state(cache_dir):
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(cache_dir.glob("shard-*"))}


def test_ranks_split_the_shards_and_build_what_one_process_builds(teacher, tmp_path):
    assert [list(SPEC.rows(shard)) for shard in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for spec in (SPEC, CacheSpec("t", (3,), KEYS, 1), CacheSpec("t", (3,), KEYS, 3), CacheSpec("t", (3,), KEYS, 20)):
        for world in (1, 2, 3, 4):  # shards[rank::world]: every manifest row exactly once
            rows = [row for rank in range(world) for s in range(spec.num_shards)[rank::world] for row in spec.rows(s)]
            assert sorted(rows) == list(range(len(KEYS))), (spec.shard_images, world)
    one = build(teacher, tmp_path / "one")
    rank0 = build(teacher, tmp_path / "two", shards=range(3)[0::2], built_by={"rank": 0})
    rank1 = build(teacher, tmp_path / "two", shards=range(3)[1::2], built_by={"rank": 1})
    assert one["computed"] == [0, 1, 2] and (rank0["computed"], rank1["computed"]) == ([0, 2], [1])
    names = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "two").iterdir())
    assert names == [f"shard-0000{s}.{suffix}" for s in range(3) for suffix in ("json", "safetensors")]
    for shard in range(3):  # byte-identical tensor files; manifests equal but for who built them
        tensors_one, manifest_one, _ = shard_files(tmp_path / "one", shard)
        tensors_two, manifest_two, _ = shard_files(tmp_path / "two", shard)
        assert tensors_one.read_bytes() == tensors_two.read_bytes()
        built = json.loads(manifest_two.read_text())
        assert built.pop("built_by") == {"rank": shard % 2}
        assert json.loads(manifest_one.read_text()) == {**built, "built_by": {}}
    index_one = write_index(tmp_path / "one.json", tmp_path / "one", SPEC)
    index_two = write_index(tmp_path / "two.json", tmp_path / "two", SPEC)
    assert [s["sha256"] for s in index_one["shards"]] == [s["sha256"] for s in index_two["shards"]]
    assert index_one["bytes_per_image"] == 256 * (9 + 16) * 2
    again = build(teacher, tmp_path / "one")
    assert (again["computed"], again["reused"]) == ([], [0, 1, 2])


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _wrong_shape(path):
    save_file(
        {
            "grid3": torch.zeros(4, 256, 3, 3, dtype=torch.float16),
            "grid4": torch.zeros(4, 256, 5, 5, dtype=torch.float16),
        },
        path,
    )
    manifest = path.with_suffix(".json")
    entry = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**entry, "bytes": path.stat().st_size}))


def _other_teacher(path):
    manifest = path.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "teacher": "sam_vit_h@1024:abc"}))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, r"truncated or rewritten"),
        (_wrong_shape, r"grid4 is F16 \[4, 256, 5, 5\], expected F16 \[4, 256, 4, 4\]"),
        (_other_teacher, r"built by teacher 'sam_vit_h@1024:abc', not 'tiny@64'"),
        (lambda path: path.with_suffix(".json").unlink(), r"^manifest missing \(tensor file without its manifest\)$"),
    ],
    ids=["truncated", "wrong-shape", "other-teacher", "no-manifest"],
)
def test_a_bad_shard_is_named_and_only_it_is_rebuilt(teacher, tmp_path, capsys, damage, reason):
    cache = tmp_path / "cache"
    build(teacher, cache)
    good = write_index(tmp_path / "index.json", cache, SPEC)
    damage(shard_files(cache, 1)[0])
    found = check_shard(cache, 1, SPEC)
    assert found is not None and re.search(reason, found) and "\n" not in found
    before = files_state(cache)
    with pytest.raises(InputError, match=r"shard-00001\.safetensors: "):
        write_index(tmp_path / "index.json", cache, SPEC)  # never silently used
    result = build(teacher, cache)
    assert result["computed"] == [1] and result["reused"] == [0, 2]
    after = files_state(cache)
    for name in ("shard-00000.safetensors", "shard-00002.safetensors", "shard-00000.json", "shard-00002.json"):
        assert after[name] == before[name], name  # the others were left alone
    assert result["invalid"] == [[1, found]]
    assert f"shard-00001.safetensors: {found}; recomputing\n" in capsys.readouterr().out
    assert check_shard(cache, 1, SPEC) is None
    assert write_index(tmp_path / "index.json", cache, SPEC)["shards"] == good["shards"]


def test_a_changed_byte_is_found_by_the_checksum_only(teacher, tmp_path):
    cache = tmp_path / "cache"
    build(teacher, cache)
    tensors = shard_files(cache, 0)[0]
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0x01  # the same size and header: only re-hashing sees it
    tensors.write_bytes(bytes(data))
    assert check_shard(cache, 0, SPEC) is None
    assert check_shard(cache, 0, SPEC, checksum=True) == "sha256 differs from its manifest"
    assert build(teacher, cache)["computed"] == []
    result = build(teacher, cache, checksum=True)
    assert result["computed"] == [0] and result["invalid"] == [[0, "sha256 differs from its manifest"]]
    assert check_shard(cache, 0, SPEC, checksum=True) is None


def test_the_reader_refuses_a_shard_changed_after_its_index(teacher, tmp_path):
    cache = tmp_path / "cache"
    build(teacher, cache)
    write_index(tmp_path / "index.json", cache, SPEC)
    _truncate(shard_files(cache, 2)[0])
    with pytest.raises(InputError, match=r"shard-00002\.safetensors: teacher shard"):
        TeacherTargets(tmp_path / "index.json", teacher_id="tiny@64", keys=KEYS, grid=3)


def test_claims_keep_two_builders_off_one_shard(teacher, tmp_path):
    cache = tmp_path / "cache"
    held = try_claim(shard_files(cache, 0)[2])
    assert held is not None and try_claim(shard_files(cache, 0)[2]) is None  # a live holder: no second claim
    result = build(teacher, cache)
    assert result["claimed_elsewhere"] == [0] and result["computed"] == [1, 2]
    held.release()

    dead = shard_files(cache, 0)[2]  # a builder on this host that died: its pid no longer runs
    dead.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "start": 1}))
    assert build(teacher, cache)["computed"] == [0]

    shard_files(cache, 1)[0].unlink()
    far = shard_files(cache, 1)[2]  # another machine: judged by its heartbeat
    far.write_text(json.dumps({"host": "elsewhere", "pid": os.getpid(), "start": 1}))
    assert build(teacher, cache)["claimed_elsewhere"] == [1]  # fresh heartbeat: left to it
    old = time.time() - 3600
    os.utime(far, (old, old))
    assert build(teacher, cache)["computed"] == [1]  # stale: taken over
    assert not list(cache.glob("*.claim*"))


def test_loader_workers_read_the_same_targets_as_the_main_process(teacher, tmp_path):
    build(teacher, tmp_path / "cache")
    write_index(tmp_path / "index.json", tmp_path / "cache", SPEC)
    targets = TeacherTargets(tmp_path / "index.json", teacher_id="tiny@64", keys=KEYS, grid=4)
    assert targets[9].shape == (256, 4, 4) and targets[9].dtype == torch.float16  # a shard handle opened here
    assert torch.equal(pickle.loads(pickle.dumps(targets))[5], targets[5])  # what a spawned worker receives
    data = WithCachedTargets(Images(len(KEYS), 56), targets)
    order = [7, 2, 9, 0, 4, 5, 1, 8, 3, 6]  # every batch mixes shards
    batches = {workers: list(DataLoader(data, batch_size=3, sampler=order, num_workers=workers)) for workers in (0, 2)}
    assert [len(batch["index"]) for batch in batches[2]] == [3, 3, 3, 1]
    for serial, parallel in zip(batches[0], batches[2], strict=True):
        assert serial.keys() == parallel.keys() == {"image", "index", "key", "target"}
        assert parallel["key"] == serial["key"] and torch.equal(parallel["index"], serial["index"])
        assert torch.equal(parallel["image"], serial["image"]) and torch.equal(parallel["target"], serial["target"])
    assert torch.cat([batch["index"] for batch in batches[2]]).tolist() == order
    expected = torch.stack([targets[row] for row in order])
    assert torch.equal(torch.cat([batch["target"] for batch in batches[2]]), expected)
    assert len({row.sum().item() for row in expected}) == len(order)  # ten different rows, not one repeated


# The pipeline step (components/teacher_cache.py) on tests/pipeline/tiny_profile.yaml: 12 synthetic SA-1B images.
TINY_PROFILE = ROOT / "tests/pipeline/tiny_profile.yaml"
TINY_SHARDS = 6


def tiny_project(root: Path, **distill: object) -> Params:
    """The tiny profile run from ``root`` (the working directory, as DVC runs a step): SA-1B staged there,
    2-image shards, CPU, no MLflow; ``distill`` overrides keys of the section. Writes ``root/params.yaml``."""
    data = read_yaml(TINY_PROFILE)
    data["distill"] |= {"cache": {"shard_images": 2}, **distill}
    data["distill"]["loop"]["device"] = "cpu"
    data["tracking"] = {"enabled": False}
    params = Params.model_validate(data)
    if not params.distill.manifest.is_file():
        stage_sa1b.run(params.stage_sa1b)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return params


def test_the_step_reuses_its_shards_and_rebuilds_only_a_deleted_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_project(tmp_path)
    first = teacher_cache_step.run(params)
    assert (first["shards"], first["computed"], first["reused"], first["invalid"]) == (TINY_SHARDS, 6, 0, [])
    assert first["rows_by_builder"] == {f"{socket.gethostname()}/rank0": 12}
    index = json.loads(params.distill.teacher_cache.read_text())
    assert len(index["shards"]) == TINY_SHARDS and index["images"] == 12 and index["teacher"] == first["teacher"]
    cache_dir = params.distill.cache.dir
    before = files_state(cache_dir)

    second = teacher_cache_step.run(params)
    assert (second["computed"], second["reused"], second["invalid"]) == (0, TINY_SHARDS, [])
    assert files_state(cache_dir) == before  # nothing rewritten

    shard_files(cache_dir, 3)[0].unlink()
    third = teacher_cache_step.run(params)
    assert (third["computed"], third["reused"]) == (1, TINY_SHARDS - 1)
    assert third["invalid"] == [[3, "tensor file missing"]]
    after = files_state(cache_dir)
    rebuilt = {"shard-00003.safetensors", "shard-00003.json"}
    assert sorted(after) == sorted(before) and all(after[name] == before[name] for name in set(before) - rebuilt)
    assert all(after[name] != before[name] for name in rebuilt)
    assert json.loads(params.distill.teacher_cache.read_text()) == index  # the same bytes again
    keys = teacher_cache_step.manifest_keys(params)
    targets = TeacherTargets(params.distill.teacher_cache, teacher_id=first["teacher"], keys=keys, grid=2)
    assert targets[7].shape == (256, 2, 2)  # tiny profile: image sizes 14, 28, 42 px → grids 1, 2, 3


def _summary(stdout: str) -> dict:
    (line,) = [line for line in stdout.splitlines() if line.startswith("{")]  # rank 0's summary only
    return json.loads(line)


@pytest.mark.slow
def test_two_torchrun_ranks_build_alternate_shards_like_one_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_project(tmp_path)
    step = ["-m", "components.teacher_cache", "--params", "params.yaml"]
    summary = _summary(run_step([*TORCHRUN_2, *step], tmp_path).stdout)
    host = socket.gethostname()
    assert (summary["computed"], summary["reused"], summary["invalid"]) == (TINY_SHARDS, 0, [])
    assert summary["rows_by_builder"] == {f"{host}/rank0": 6, f"{host}/rank1": 6}
    cache_dir = tmp_path / params.distill.cache.dir
    for shard in range(TINY_SHARDS):
        built_by = json.loads(shard_files(cache_dir, shard)[1].read_text())["built_by"]
        assert (built_by["rank"], built_by["world"], built_by["host"]) == (shard % 2, 2, host), shard
    assert not list(cache_dir.glob("*.claim*")) and not list(cache_dir.glob(".*.tmp.*"))

    one = tiny_project(tmp_path, out_dir="outputs/one", cache={"dir": "outputs/.work/one", "shard_images": 2})
    alone = _summary(run_step(step, tmp_path).stdout)
    assert alone["computed"] == TINY_SHARDS and alone["rows_by_builder"] == {f"{host}/rank0": 12}
    ranks = json.loads((tmp_path / params.distill.teacher_cache).read_text())
    single = json.loads((tmp_path / one.distill.teacher_cache).read_text())
    assert [shard["sha256"] for shard in ranks["shards"]] == [shard["sha256"] for shard in single["shards"]]
    assert ranks.pop("cache_dir") != single.pop("cache_dir") and ranks == single

    tiny_project(tmp_path)  # the ranks' cache again, with a bad shard of rank 1: its summary reaches rank 0's
    _truncate(shard_files(cache_dir, 3)[0])
    before = files_state(cache_dir)
    again = _summary(run_step([*TORCHRUN_2, *step], tmp_path).stdout)
    assert (again["computed"], again["reused"]) == (1, TINY_SHARDS - 1)
    assert [shard for shard, _ in again["invalid"]] == [3] and "truncated" in again["invalid"][0][1]
    after = files_state(cache_dir)
    assert all(after[name] == before[name] for name in before if not name.startswith("shard-00003."))
    assert json.loads(shard_files(cache_dir, 3)[1].read_text())["built_by"]["rank"] == 1
    assert json.loads((tmp_path / params.distill.teacher_cache).read_text())["shards"] == ranks["shards"]


def test_two_gloo_ranks_under_torchrun_build_the_one_process_cache(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        monkeypatch.chdir(root)
        params = tiny_project(root)
    monkeypatch.chdir(tmp_path)
    run_step(["-m", "components.teacher_cache"], one)
    launched = run_step([*TORCHRUN_2, "-m", "components.teacher_cache"], two)
    index_one = json.loads((one / params.distill.teacher_cache).read_text())
    index_two = json.loads((two / params.distill.teacher_cache).read_text())
    assert index_two == index_one and len(index_one["shards"]) == TINY_SHARDS  # every shard's sha256 equal
    monkeypatch.chdir(two)
    rows = shard_rows_by_rank(
        params.distill.cache.dir, teacher_cache_step.cache_spec(params, teacher_cache_step.manifest_keys(params))
    )
    host = socket.gethostname()
    assert rows == {f"{host}/rank0": 6, f"{host}/rank1": 6}, (rows, launched.stdout[-2000:])  # shards[rank::2]
