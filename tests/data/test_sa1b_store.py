"""The SA-1B store outside DVC's outputs: what survives a deleted output folder, a killed run, a changed tar,
several workers; JSON byte ranges."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from components.stage_sa1b import StageSA1BConfig, run, select_tars
from fsdino.data.sa1b import index_sa1b_tar
from fsdino.data.synthetic_sa1b import write_links_file, write_synthetic_sa1b
from fsdino.errors import InputError
from tests.data.sa1b_fixtures import jpeg_bytes, serve_directory, write_tar

NUM_TARS, IMAGES_PER_TAR = 6, 3


@pytest.fixture
def release(tmp_path):
    return write_synthetic_sa1b(tmp_path / "release", num_tars=NUM_TARS, images_per_tar=IMAGES_PER_TAR, seed=1)


def names_of(release) -> list[str]:
    return [path.name for path in release.tar_paths]


def config(root: Path, **fields) -> StageSA1BConfig:
    """A config writing ``root/out`` (the DVC output) with its store in ``root/store``."""
    base = {"output_dir": root / "out", "store_dir": root / "store", "progress": False, "backoff_s": 0.0}
    return StageSA1BConfig(**{**base, **fields})


def recorded(root: Path) -> list[str]:
    """The tars with a record in the store of ``root``, by name."""
    return sorted(f"{path.stem}.tar" for path in (root / "store" / "records").glob("*.json"))


def read_record(root: Path, name: str) -> dict:
    return json.loads((root / "store" / "records" / f"{Path(name).stem}.json").read_text())


def test_deleting_the_output_folder_as_dvc_does_fetches_nothing_again(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", names_of(release), url)
        first = run(config(tmp_path, links_file=links, num_tars=4))
        manifest = (tmp_path / "out" / "manifest.parquet").read_bytes()
        tars = (tmp_path / "out" / "tars.json").read_bytes()
        shutil.rmtree(tmp_path / "out")  # dvc repro and the flow delete a stage's outputs before running it
        requests = len(served.requests)
        second = run(config(tmp_path, links_file=links, num_tars=4))
    assert first["staged_tars"] == 4 and first["bytes_downloaded"] > 0 and recorded(tmp_path) == sorted(first["used"])
    assert len(served.requests) == requests and second["bytes_downloaded"] == 0 and second["reused_tars"] == 4
    assert second["downloaded"] == dict.fromkeys(first["selected"], 0)
    assert (tmp_path / "out" / "manifest.parquet").read_bytes() == manifest
    assert (tmp_path / "out" / "tars.json").read_bytes() == tars


def test_a_killed_run_resumes_its_partial_tar_and_never_refetches_a_recorded_one(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", names_of(release), url)
        done = run(config(tmp_path, links_file=links, num_tars=2, download_workers=1))["selected"]
        manifest = (tmp_path / "out" / "manifest.parquet").read_bytes()
        new = select_tars(names_of(release), seed=0, fraction=1.0, num_tars=3)[2]
        served.drop_after[new] = 5000  # the connection breaks part-way: with no retry left, the run dies
        with pytest.raises(InputError, match=rf"{new}: download failed after 1 attempts"):
            run(config(tmp_path, links_file=links, num_tars=3, download_workers=1, retries=0))
        assert (tmp_path / "store" / "tars" / f"{new}.part").stat().st_size == 5000
        assert recorded(tmp_path) == sorted(done)  # nothing half-written: no record for the unfinished tar ...
        assert (tmp_path / "out" / "manifest.parquet").read_bytes() == manifest  # ... and the manifest as it was
        served.requests.clear()
        summary = run(config(tmp_path, links_file=links, num_tars=3, download_workers=1))
    assert served.requests == [(new, "bytes=5000-")]  # only the unfinished tar, from where it stopped
    size = os.path.getsize(release.tar_paths[0].parent / new)
    assert summary["downloaded"] == {**dict.fromkeys(done, 0), new: size - 5000}
    assert (tmp_path / "store" / "tars" / new).read_bytes() == (release.tar_paths[0].parent / new).read_bytes()


def test_a_failed_tar_lets_the_tars_in_flight_finish_for_the_next_run(release, tmp_path):
    selected = select_tars(names_of(release), seed=0, fraction=1.0, num_tars=3)
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", names_of(release), url)
        served.delay_s[selected[0]] = 0.5  # the other two are under way when the first one fails
        served.drop_after[selected[0]] = 5000
        with pytest.raises(InputError, match=rf"{selected[0]}: download failed"):
            run(config(tmp_path, links_file=links, num_tars=3, download_workers=3, retries=0))
        assert recorded(tmp_path) == sorted(selected[1:])
        assert not (tmp_path / "out" / "manifest.parquet").exists()
        served.requests.clear()
        served.delay_s.clear()
        summary = run(config(tmp_path, links_file=links, num_tars=3, download_workers=3))
    assert served.requests == [(selected[0], "bytes=5000-")]
    assert (summary["reused_tars"], summary["staged_tars"], summary["used"]) == (2, 1, selected)


def test_several_workers_keep_the_selection_order_whatever_finishes_first(release, tmp_path):
    selected = select_tars(names_of(release), seed=0, fraction=1.0)
    tar_dir = release.tar_paths[0].parent
    serial = run(config(tmp_path / "a", source="local", tar_dir=tar_dir, fraction=1.0, download_workers=1))
    with serve_directory(tar_dir) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", names_of(release), url)
        served.delay_s[selected[0]] = 0.5  # the first tar of the window of three comes back last
        parallel = run(config(tmp_path / "b", links_file=links, fraction=1.0, download_workers=3))
    assert set(served.finished[:2]) == set(selected[1:3]) and served.finished[2] == selected[0]  # out of order
    assert serial["used"] == parallel["used"] == list(parallel["downloaded"]) == selected
    a = pd.read_parquet(tmp_path / "a" / "out" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "b" / "out" / "manifest.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert list(dict.fromkeys(b["tar"])) == selected
    assert list(json.loads((tmp_path / "b" / "out" / "tars.json").read_text())["tars"]) == selected


def test_a_changed_tar_is_indexed_again(release, tmp_path):
    tar_dir = release.tar_paths[0].parent
    local = {"source": "local", "tar_dir": tar_dir, "num_tars": 1}
    name = run(config(tmp_path, **local))["selected"][0]
    path, size = tar_dir / name, (tar_dir / name).stat().st_size
    assert run(config(tmp_path, **local))["reused_tars"] == 1
    assert run(config(tmp_path, **local, sizes={name: size}))["reused_tars"] == 1  # the configured size agrees

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: no longer the recorded file
    assert run(config(tmp_path, **local))["staged_tars"] == 1
    assert run(config(tmp_path, **local))["reused_tars"] == 1  # the new record is current

    moved = tmp_path / "moved"
    shutil.copytree(tar_dir, moved)  # same bytes, size and mtime in another folder: another file all the same
    assert (moved / name).stat().st_mtime_ns == path.stat().st_mtime_ns
    assert run(config(tmp_path, **{**local, "tar_dir": moved}))["staged_tars"] == 1
    assert read_record(tmp_path, name)["path"] == str(moved / name)

    mtime = read_record(tmp_path, name)["mtime_ns"]
    write_tar(moved / name, [("./sa_77.jpg", jpeg_bytes())])  # another tar under that name, another size ...
    os.utime(moved / name, ns=(time.time_ns(), mtime))  # ... with the recorded mtime: only the size tells
    summary = run(config(tmp_path, **{**local, "tar_dir": moved}))
    assert (summary["staged_tars"], summary["images"]) == (1, 1)
    assert pd.read_parquet(tmp_path / "out" / "manifest.parquet")["key"].tolist() == ["sa_77"]
    with pytest.raises(InputError, match=rf"{name}: size mismatch: expected {size} bytes"):
        run(config(tmp_path, **{**local, "tar_dir": moved}, sizes={name: size}))  # checked, not taken from the record


def test_verify_checksum_sees_same_size_corruption_that_verify_size_trusts(release, tmp_path):
    tar_dir = release.tar_paths[0].parent
    name = run(config(tmp_path, source="local", tar_dir=tar_dir, num_tars=1))["selected"][0]
    path = tar_dir / name
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    checked = {"source": "local", "tar_dir": tar_dir, "num_tars": 1, "checksums": {name: digest}}
    assert run(config(tmp_path, **checked))["staged_tars"] == 1  # the record had no checksum: verified, recorded
    assert read_record(tmp_path, name)["checksum"] == digest
    assert run(config(tmp_path, **checked, verify="checksum"))["reused_tars"] == 1
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, same mtime: only a re-hash can tell
    mtime = path.stat().st_mtime_ns
    path.write_bytes(bytes(data))
    os.utime(path, ns=(time.time_ns(), mtime))
    assert run(config(tmp_path, **checked))["reused_tars"] == 1  # verify: size trusts size and mtime
    with pytest.raises(InputError, match=rf"{name}: sha256 mismatch"):
        run(config(tmp_path, **checked, verify="checksum"))
    assert recorded(tmp_path) == []  # the failed check leaves no record to vouch for the file ...
    with pytest.raises(InputError, match=rf"{name}: sha256 mismatch"):
        run(config(tmp_path, **checked))  # ... so a run with verify: size checks it again too


def test_verify_checksum_sees_a_downloaded_tar_corrupted_in_the_store(release, tmp_path):
    name = select_tars(names_of(release), seed=0, fraction=1.0, num_tars=1)[0]
    data = (release.tar_paths[0].parent / name).read_bytes()
    stored = tmp_path / "store" / "tars" / name
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", names_of(release), url)
        checked = {"links_file": links, "num_tars": 1, "checksums": {name: "md5:" + hashlib.md5(data).hexdigest()}}
        run(config(tmp_path, **checked))
        corrupt = bytearray(stored.read_bytes())
        corrupt[2000] ^= 0xFF
        mtime = stored.stat().st_mtime_ns
        stored.write_bytes(bytes(corrupt))
        os.utime(stored, ns=(time.time_ns(), mtime))
        requests = len(served.requests)
        assert run(config(tmp_path, **checked))["reused_tars"] == 1
        with pytest.raises(InputError, match=rf"{re.escape(str(stored))}: md5 mismatch"):
            run(config(tmp_path, **checked, verify="checksum"))
        assert len(served.requests) == requests and recorded(tmp_path) == []
        stored.unlink()  # what the message asks for: the next run fetches it again
        summary = run(config(tmp_path, **checked, verify="checksum"))
    assert summary["downloaded"] == {name: len(data)} and stored.read_bytes() == data


def test_index_json_on_recorded_tars_indexes_them_again_with_ranges_holding_the_json(release, tmp_path):
    tar_dir = release.tar_paths[0].parent
    local = {"source": "local", "tar_dir": tar_dir, "num_tars": 2}
    run(config(tmp_path, **local))
    plain = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert (plain["json_offset"] == -1).all() and (plain["json_bytes"] == -1).all()
    summary = run(config(tmp_path, **local, index_json=True))
    assert (summary["staged_tars"], summary["reused_tars"]) == (2, 0)  # the records lacked the JSON ranges
    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    columns = ["key", "tar", "offset", "bytes", "width", "height"]
    pd.testing.assert_frame_equal(frame[columns], plain[columns])
    for row in frame.itertuples():
        data = (tar_dir / row.tar).read_bytes()
        image = json.loads(data[row.json_offset : row.json_offset + row.json_bytes])["image"]
        assert (image["image_id"], image["file_name"]) == (row.image_id, f"{row.key}.jpg")
        assert (image["width"], image["height"]) == (row.width, row.height)
    assert run(config(tmp_path, **local))["reused_tars"] == 2  # a record with the JSON serves a run without


def test_index_json_ranges_for_images_with_and_without_annotations(tmp_path):
    annotation = json.dumps({"image": {"image_id": 1, "file_name": "sa_1.jpg"}}).encode()
    tar = write_tar(
        tmp_path / "sa_000000.tar",
        [("./sa_1.jpg", jpeg_bytes()), ("./sa_1.json", annotation), ("./sa_2.jpg", jpeg_bytes((8, 6))),
         ("./sa_3.json", b"{}")],
    )  # fmt: skip
    data = tar.read_bytes()
    index = index_sa1b_tar(tar, include_json=True)
    rows = {row["key"]: row for row in index["rows"]}
    assert list(rows) == ["sa_1", "sa_2"] and index["include_json"] and index["corrupt_images"] == 0
    first = rows["sa_1"]
    assert data[first["json_offset"] : first["json_offset"] + first["json_bytes"]] == annotation
    assert data[first["offset"] : first["offset"] + first["bytes"]] == jpeg_bytes()
    assert (rows["sa_2"]["json_offset"], rows["sa_2"]["json_bytes"]) == (-1, -1)  # no annotation in the tar
    assert (rows["sa_2"]["width"], rows["sa_2"]["height"]) == (8, 6)
    without = index_sa1b_tar(tar)
    assert all((row["json_offset"], row["json_bytes"]) == (-1, -1) for row in without["rows"])
