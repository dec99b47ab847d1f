"""The SA-1B store outside DVC's outputs: what survives a deleted output folder, a changed tar, several workers."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pandas as pd
import pytest

from components.stage_sa1b import StageSA1BConfig, run, select_tars
from fsdino.data.synthetic_sa1b import write_links_file, write_synthetic_sa1b
from fsdino.errors import InputError
from tests.data.sa1b_fixtures import serve_directory

NUM_TARS, IMAGES_PER_TAR = 6, 3


@pytest.fixture
def release(tmp_path):
    return write_synthetic_sa1b(tmp_path / "release", num_tars=NUM_TARS, images_per_tar=IMAGES_PER_TAR, seed=1)


def config(tmp_path, **fields) -> StageSA1BConfig:
    base = {"output_dir": tmp_path / "out", "store_dir": tmp_path / "store", "progress": False, "backoff_s": 0.0}
    return StageSA1BConfig(**{**base, **fields})


def test_deleting_the_output_folder_as_dvc_does_fetches_nothing_again(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", [path.name for path in release.tar_paths], url)
        first = run(config(tmp_path, links_file=links, num_tars=4))
        manifest = (tmp_path / "out" / "manifest.parquet").read_bytes()
        shutil.rmtree(tmp_path / "out")  # dvc repro and the flow delete a stage's outputs before running it
        requests = len(served.requests)
        second = run(config(tmp_path, links_file=links, num_tars=4))
    assert first["staged_tars"] == 4 and first["bytes_downloaded"] > 0
    assert len(served.requests) == requests and second["bytes_downloaded"] == 0 and second["reused_tars"] == 4
    assert (tmp_path / "out" / "manifest.parquet").read_bytes() == manifest


def test_a_killed_run_resumes_its_partial_tar_and_never_refetches_a_recorded_one(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", [path.name for path in release.tar_paths], url)
        recorded = run(config(tmp_path, links_file=links, num_tars=2, download_workers=1))["selected"]
        new = select_tars([path.name for path in release.tar_paths], seed=0, fraction=1.0, num_tars=3)[2]
        served.drop_after[new] = 5000  # the connection breaks part-way: with no retry left, the run dies
        with pytest.raises(InputError, match="download failed"):
            run(config(tmp_path, links_file=links, num_tars=3, download_workers=1, retries=0))
        served.requests.clear()
        summary = run(config(tmp_path, links_file=links, num_tars=3, download_workers=1))
    assert served.requests == [(new, "bytes=5000-")]  # only the unfinished tar, from where it stopped
    assert summary["downloaded"] == {
        **dict.fromkeys(recorded, 0),
        new: os.path.getsize(release.tar_paths[0].parent / new) - 5000,
    }


def test_several_workers_keep_the_selection_order(release, tmp_path):
    tar_dir = release.tar_paths[0].parent
    serial = run(config(tmp_path / "a", source="local", tar_dir=tar_dir, fraction=1.0, download_workers=1))
    parallel = run(config(tmp_path / "b", source="local", tar_dir=tar_dir, fraction=1.0, download_workers=3))
    a = pd.read_parquet(tmp_path / "a" / "out" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "b" / "out" / "manifest.parquet")
    assert serial["used"] == parallel["used"] == serial["selected"]
    pd.testing.assert_frame_equal(a, b)
    assert list(dict.fromkeys(a["tar"])) == serial["selected"]


def test_a_changed_tar_is_indexed_again_and_checksum_verification_sees_same_size_corruption(release, tmp_path):
    tar_dir = release.tar_paths[0].parent
    name = run(config(tmp_path, source="local", tar_dir=tar_dir, num_tars=1))["selected"][0]
    path = tar_dir / name
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: no longer the recorded file
    assert run(config(tmp_path, source="local", tar_dir=tar_dir, num_tars=1))["staged_tars"] == 1

    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    checked = {"source": "local", "tar_dir": tar_dir, "num_tars": 1, "checksums": {name: digest}}
    assert run(config(tmp_path, **checked))["staged_tars"] == 1  # the record now carries the checksum
    assert run(config(tmp_path, **checked, verify="checksum"))["reused_tars"] == 1
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, same mtime: only a re-hash can tell
    mtime = path.stat().st_mtime_ns
    path.write_bytes(bytes(data))
    os.utime(path, ns=(time.time_ns(), mtime))
    assert run(config(tmp_path, **checked))["reused_tars"] == 1  # verify: size trusts size and mtime
    with pytest.raises(InputError, match=rf"{name}: sha256 mismatch"):
        run(config(tmp_path, **checked, verify="checksum"))
