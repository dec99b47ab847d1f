"""The sharded teacher cache: rank split, bad shards named and rebuilt (only they), claims between processes."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
import torch
from safetensors.torch import save_file

from fsdino.config import TeacherConfig
from fsdino.errors import InputError
from fsdino.io.claims import try_claim
from fsdino.models.teacher_builder import build_teacher
from fsdino.training.teacher_cache import (
    CacheSpec,
    TeacherTargets,
    build_shards,
    check_shard,
    shard_files,
    write_index,
)
from tests.training.test_distill import Images

KEYS = tuple(f"sa_{i}" for i in range(10))
SPEC = CacheSpec("tiny@64", (3, 4), KEYS, shard_images=4)  # shards of 4, 4 and 2 rows


@pytest.fixture(scope="module")
def teacher():
    return build_teacher(TeacherConfig(arch="tiny", image_size=64))


def build(teacher, cache_dir, shards=range(SPEC.num_shards), spec=SPEC):
    return build_shards(lambda: teacher, Images(len(spec.keys), 64), spec, cache_dir, shards=shards, progress=False)


def files_state(cache_dir):
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(cache_dir.glob("shard-*"))}


def test_ranks_split_the_shards_and_build_what_one_process_builds(teacher, tmp_path):
    assert [list(SPEC.rows(shard)) for shard in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    one = build(teacher, tmp_path / "one")
    rank0 = build(teacher, tmp_path / "two", shards=range(3)[0::2])
    rank1 = build(teacher, tmp_path / "two", shards=range(3)[1::2])
    assert one["computed"] == [0, 1, 2] and (rank0["computed"], rank1["computed"]) == ([0, 2], [1])
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
        (lambda path: path.with_suffix(".json").unlink(), r"not built"),
    ],
)
def test_a_bad_shard_is_named_and_only_it_is_rebuilt(teacher, tmp_path, capsys, damage, reason):
    cache = tmp_path / "cache"
    build(teacher, cache)
    good = write_index(tmp_path / "index.json", cache, SPEC)
    damage(shard_files(cache, 1)[0])
    found = check_shard(cache, 1, SPEC)
    assert found is not None and re.search(reason, found)
    before = files_state(cache)
    with pytest.raises(InputError, match=r"shard-00001\.safetensors: "):
        write_index(tmp_path / "index.json", cache, SPEC)  # never silently used
    result = build(teacher, cache)
    assert result["computed"] == [1] and result["reused"] == [0, 2]
    after = files_state(cache)
    for name in ("shard-00000.safetensors", "shard-00002.safetensors", "shard-00000.json", "shard-00002.json"):
        assert after[name] == before[name], name  # the others were left alone
    if reason != "not built":
        assert (
            result["invalid"] == [[1, found]]
            and f"shard-00001.safetensors: {found}; recomputing" in capsys.readouterr().out
        )
    assert write_index(tmp_path / "index.json", cache, SPEC)["shards"] == good["shards"]


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
