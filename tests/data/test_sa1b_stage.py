"""Staging SA-1B from a local folder and over HTTP: selection, manifest, resume, verification, safety."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from components.stage_sa1b import StageSA1BConfig, main, run, select_tars
from fsdino.data.sa1b import MANIFEST_COLUMNS, read_manifest
from fsdino.data.synthetic_sa1b import write_links_file, write_synthetic_sa1b
from fsdino.errors import InputError
from tests.data.sa1b_fixtures import jpeg_bytes, serve_directory, symlink_member, write_tar

NUM_TARS, IMAGES_PER_TAR = 6, 3


@pytest.fixture
def release(tmp_path):
    return write_synthetic_sa1b(tmp_path / "release", num_tars=NUM_TARS, images_per_tar=IMAGES_PER_TAR, seed=0)


def make_config(**fields) -> StageSA1BConfig:
    """A config whose store (tars, .part files, records) is ``<output_dir>-store``, beside its output."""
    output = Path(fields.get("output_dir", "out"))
    fields.setdefault("store_dir", output.with_name(f"{output.name}-store"))
    return StageSA1BConfig(progress=False, backoff_s=0.0, **fields)


def tars_of(output: Path) -> Path:
    """Where the downloads of the run writing ``output`` go."""
    return output.with_name(f"{output.name}-store") / "tars"


def records_of(output: Path) -> list[Path]:
    return sorted((output.with_name(f"{output.name}-store") / "records").glob("*.json"))


def test_selection_is_a_seeded_ranking():
    pool = [f"sa_{index:06d}.tar" for index in range(1000)]
    chosen = select_tars(pool, seed=0, fraction=0.01)
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert chosen == select_tars(list(reversed(pool)), seed=0, fraction=0.01)
    assert chosen != select_tars(pool, seed=1, fraction=0.01)
    assert chosen[0] == min(pool, key=lambda name: hashlib.sha256(f"0:{name}".encode()).hexdigest())
    assert select_tars(pool, seed=0, fraction=0.01, num_tars=3) == chosen[:3]
    assert len(select_tars(pool[:100], seed=0, fraction=0.07)) == 7  # 0.07 × 100 is 7.000000000000001
    assert len(select_tars(pool[:6], seed=0, fraction=0.01)) == 1
    with pytest.raises(InputError, match="pool holds 6"):
        select_tars(pool[:6], seed=0, fraction=0.5, num_tars=7)


def test_local_manifest_lists_every_selected_image(release, tmp_path):
    output = tmp_path / "out"
    summary = run(make_config(source="local", tar_dir=release.tar_paths[0].parent, fraction=0.5, output_dir=output))
    names = [path.name for path in release.tar_paths]
    assert summary["selected"] == select_tars(names, seed=0, fraction=0.5) and len(summary["selected"]) == 3
    manifest = pd.read_parquet(output / "manifest.parquet")
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert len(manifest) == summary["images"] == 3 * IMAGES_PER_TAR
    assert manifest["tar"].unique().tolist() == summary["selected"]
    tars = json.loads((output / "tars.json").read_text())["tars"]
    for name in summary["selected"]:
        tar_path = release.tar_paths[0].parent / name
        assert (output / tars[name]["path"]).resolve() == tar_path.resolve()  # read in place, never copied
        assert tars[name]["size"] == tar_path.stat().st_size and tars[name]["images"] == IMAGES_PER_TAR
        data = tar_path.read_bytes()
        with tarfile.open(tar_path) as archive:
            for image_id in release.image_ids[name]:
                record = json.loads(archive.extractfile(f"./sa_{image_id}.json").read())["image"]
                row = manifest.set_index("key").loc[f"sa_{image_id}"]
                jpeg = archive.extractfile(f"./sa_{image_id}.jpg").read()
                assert (row["width"], row["height"], row["bytes"]) == (record["width"], record["height"], len(jpeg))
                assert data[row["offset"] : row["offset"] + row["bytes"]] == jpeg  # the byte range in the tar
                assert row["tar"] == name and row["json_offset"] == row["json_bytes"] == -1
    assert release.tar_paths[0].exists()  # a local source is never deleted
    assert sorted(path.name for path in output.iterdir()) == ["manifest.parquet", "tars.json"]  # nothing extracted


def test_http_download_then_second_run_fetches_nothing(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", [path.name for path in release.tar_paths], url)
        config = make_config(links_file=links, num_tars=2, output_dir=tmp_path / "out", index_json=True)
        first = run(config)
        sizes = {path.name: path.stat().st_size for path in release.tar_paths}
        assert dict(served.bytes_sent) == {name: sizes[name] for name in first["selected"]}
        assert first["bytes_downloaded"] == sum(sizes[name] for name in first["selected"])
        assert sorted(p.name for p in tars_of(tmp_path / "out").iterdir()) == sorted(first["selected"])  # kept
        requests = len(served.requests)
        second = run(config)
    assert len(served.requests) == requests and second["bytes_downloaded"] == 0
    assert (second["reused_tars"], second["staged_tars"]) == (2, 0)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(manifest) == 2 * IMAGES_PER_TAR and (manifest["json_offset"] > 0).all()
    for row in manifest.itertuples():
        data = (tars_of(tmp_path / "out") / row.tar).read_bytes()
        assert json.loads(data[row.json_offset : row.json_offset + row.json_bytes])["image"]["image_id"] == row.image_id


def _single_tar_setup(release, tmp_path, url):
    name = select_tars([path.name for path in release.tar_paths], seed=0, fraction=0.01)[0]
    links = write_links_file(tmp_path / "links.tsv", [path.name for path in release.tar_paths], url)
    data = (release.tar_paths[0].parent / name).read_bytes()
    return name, links, data


def test_http_resumes_a_partial_download(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        name, links, data = _single_tar_setup(release, tmp_path, url)
        part = tars_of(tmp_path / "out") / f"{name}.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[:5000])
        checksum = "sha256:" + hashlib.sha256(data).hexdigest()
        config = make_config(links_file=links, num_tars=1, output_dir=tmp_path / "out", checksums={name: checksum})
        summary = run(config)
    assert served.bytes_sent[name] == len(data) - 5000 == summary["bytes_downloaded"]
    assert served.requests == [(name, "bytes=5000-")]
    assert (tars_of(tmp_path / "out") / name).read_bytes() == data and not part.exists()


def test_http_retries_a_dropped_connection_and_restarts_when_range_is_ignored(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        name, links, data = _single_tar_setup(release, tmp_path, url)
        served.drop_after[name] = 7000
        run(make_config(links_file=links, num_tars=1, output_dir=tmp_path / "a"))
        assert served.requests == [(name, None), (name, "bytes=7000-")]
        assert served.bytes_sent[name] == len(data)
        assert (tars_of(tmp_path / "a") / name).read_bytes() == data

        served.ignore_range = True
        part = tars_of(tmp_path / "b") / f"{name}.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(b"x" * 3000)  # not the file's bytes: only a restart can give the right file
        run(make_config(links_file=links, num_tars=1, output_dir=tmp_path / "b"))
    assert (tars_of(tmp_path / "b") / name).read_bytes() == data


def test_http_503_is_retried_and_a_complete_part_is_only_renamed(release, tmp_path):
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        name, links, data = _single_tar_setup(release, tmp_path, url)
        served.fail_once[name] = 503
        run(make_config(links_file=links, num_tars=1, output_dir=tmp_path / "a"))
        assert [request[1] for request in served.requests] == [None, None]
        assert (tars_of(tmp_path / "a") / name).read_bytes() == data

        part = tars_of(tmp_path / "b") / f"{name}.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(data)  # downloaded, but the run stopped before the rename
        sent = served.bytes_sent[name]
        summary = run(make_config(links_file=links, num_tars=1, output_dir=tmp_path / "b"))
    assert served.requests[-1] == (name, f"bytes={len(data)}-")  # answered 416 with the full size
    assert served.bytes_sent[name] == sent and summary["bytes_downloaded"] == 0
    assert (tars_of(tmp_path / "b") / name).read_bytes() == data


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("checksums", "sha256:" + "0" * 64, "sha256 mismatch"),
        ("checksums", "md5:" + "0" * 32, "md5 mismatch"),
        ("sizes", 123, "remote size"),
    ],
)
def test_verification_failure_is_an_input_error(release, tmp_path, field, value, message):
    with serve_directory(release.tar_paths[0].parent) as (url, _):
        name, links, _ = _single_tar_setup(release, tmp_path, url)
        config = make_config(links_file=links, num_tars=1, output_dir=tmp_path / "out", **{field: {name: value}})
        with pytest.raises(InputError, match=f"{name}.*{message}"):
            run(config)
    assert not list(tars_of(tmp_path / "out").iterdir())  # the bad download is not kept
    assert not (tmp_path / "out" / "manifest.parquet").exists() and not records_of(tmp_path / "out")


def test_local_tar_with_a_wrong_checksum_is_an_input_error(release, tmp_path):
    tar_dir = release.tar_paths[0].parent
    wrong = {path.name: "sha256:" + "2" * 64 for path in release.tar_paths}
    with pytest.raises(InputError, match=r"sa_\d{6}\.tar: sha256 mismatch"):
        run(make_config(source="local", tar_dir=tar_dir, num_tars=1, checksums=wrong, output_dir=tmp_path / "out"))
    assert all(path.exists() for path in release.tar_paths)  # never deletes what it did not download


def test_expired_link_is_an_input_error(release, tmp_path):
    with serve_directory(tmp_path / "nowhere") as (url, _):
        (tmp_path / "nowhere").mkdir()
        links = write_links_file(tmp_path / "links.tsv", ["sa_000000.tar"], url)
        with pytest.raises(InputError, match=r"sa_000000\.tar: HTTP 404"):
            run(make_config(links_file=links, num_tars=1, output_dir=tmp_path / "out"))


@pytest.mark.parametrize(
    ("member", "shown"),
    [
        (("../evil.jpg", b"x"), "../evil.jpg"),
        (("/etc/x.jpg", b"x"), "/etc/x.jpg"),
        (symlink_member("./sa_9.jpg", "/etc/passwd"), "./sa_9.jpg"),
        (("./nested/sa_8.jpg", b"x"), "./nested/sa_8.jpg"),
    ],
)
def test_unsafe_members_are_rejected_before_anything_is_written(tmp_path, member, shown):
    tar_dir = tmp_path / "tars"
    tar_dir.mkdir()
    write_tar(tar_dir / "sa_000000.tar", [("./sa_1.jpg", jpeg_bytes()), member, ("./sa_2.jpg", jpeg_bytes())])
    output = tmp_path / "deep" / "out"
    with pytest.raises(InputError, match=rf"sa_000000\.tar: member '{re.escape(shown)}'"):
        run(make_config(source="local", tar_dir=tar_dir, num_tars=1, output_dir=output))
    assert not (tmp_path / "deep" / "evil.jpg").exists() and not (output / "evil.jpg").exists()
    assert not Path("/etc/x.jpg").exists()
    assert not records_of(output) and not output.exists()  # no record, no manifest: nothing half-written


def test_hardlinks_and_devices_are_rejected(tmp_path):
    for kind in (tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        tar_dir = tmp_path / f"tars{kind!r}"
        tar_dir.mkdir()
        info = tarfile.TarInfo("./sa_3.jpg")
        info.type, info.linkname = kind, "./sa_1.jpg" if kind == tarfile.LNKTYPE else ""
        write_tar(tar_dir / "sa_000000.tar", [("./sa_1.jpg", jpeg_bytes()), info])
        with pytest.raises(InputError, match=r"sa_000000\.tar: member './sa_3.jpg' is a (link|special file)"):
            run(make_config(source="local", tar_dir=tar_dir, num_tars=1, output_dir=tmp_path / "out"))


@pytest.mark.parametrize("cut", ["mid_member", "member_boundary", "header_only"])
def test_truncated_tar_is_an_input_error(release, tmp_path, cut):
    data = release.tar_paths[0].read_bytes()
    with tarfile.open(release.tar_paths[0]) as archive:
        last = archive.getmembers()[-1]
    boundary = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE  # no end-of-archive
    length = {"mid_member": len(data) // 2, "member_boundary": boundary, "header_only": 300}[cut]
    tar_dir = tmp_path / "tars"
    tar_dir.mkdir()
    (tar_dir / "sa_000000.tar").write_bytes(data[:length])
    with pytest.raises(InputError, match=r"sa_000000\.tar: corrupt or truncated tar"):
        run(make_config(source="local", tar_dir=tar_dir, num_tars=1, output_dir=tmp_path / "out"))
    assert not records_of(tmp_path / "out") and not (tmp_path / "out").exists()


def test_max_images_then_more_restages_only_what_is_missing(release, tmp_path):
    tar_dir, output = release.tar_paths[0].parent, tmp_path / "out"
    one_at_a_time = {"source": "local", "tar_dir": tar_dir, "num_tars": 3, "download_workers": 1}
    first = run(make_config(**one_at_a_time, max_images=4, output_dir=output))
    assert first["images"] == 4 and first["used"] == first["selected"][:2] and len(records_of(output)) == 2
    assert len(pd.read_parquet(output / "manifest.parquet")) == 4
    second = run(make_config(**one_at_a_time, output_dir=output))
    # the two tars of the first run are indexed whole, so only the third is new
    assert (second["reused_tars"], second["staged_tars"], second["images"]) == (2, 1, 9)


def test_max_images_lets_started_tars_finish_and_never_starts_the_rest(release, tmp_path):
    names = [path.name for path in release.tar_paths]
    selected = select_tars(names, seed=0, fraction=1.0)
    with serve_directory(release.tar_paths[0].parent) as (url, served):
        links = write_links_file(tmp_path / "links.tsv", names, url)
        served.delay_s[selected[0]] = 0.5  # the 2nd and 3rd tars of the window start while the 1st is served
        config = make_config(
            links_file=links, fraction=1.0, download_workers=3, max_images=4, output_dir=tmp_path / "out"
        )
        summary = run(config)
    assert summary["images"] == 4 and summary["used"] == selected[:2]  # 3 images a tar: the cap falls in the 2nd
    recorded = {path.stem + ".tar" for path in records_of(tmp_path / "out")}
    # the window holds 3 tars: the 3rd was running when the cap was reached and is kept for the next run; the
    # 4th was queued when the 1st came back (started or cancelled, as the threads went); the rest never started
    assert set(selected[:3]) <= recorded <= set(selected[:4])
    requested = {name for name, _ in served.requests}
    assert set(selected[:3]) <= requested <= set(selected[:4])
    assert sorted(p.name for p in tars_of(tmp_path / "out").iterdir()) == sorted(recorded)


def test_unreadable_jpeg_is_skipped_with_a_warning(tmp_path):
    tar_dir = tmp_path / "tars"
    tar_dir.mkdir()
    write_tar(tar_dir / "sa_000000.tar", [("./sa_1.jpg", jpeg_bytes()), ("./sa_2.jpg", b"not a jpeg")])
    with pytest.warns(UserWarning, match="sa_2.jpg"):
        summary = run(make_config(source="local", tar_dir=tar_dir, num_tars=1, output_dir=tmp_path / "out"))
    assert (summary["images"], summary["corrupt_images"]) == (1, 1)


def test_cli_reads_the_params_section_and_flags(release, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(
        f"stage_sa1b:\n  source: local\n  tar_dir: {release.tar_paths[0].parent}\n  fraction: 0.5\n"
        f"  store_dir: {tmp_path / 'store'}\n"
    )
    flags = ["--output-dir", str(tmp_path / "out"), "--num-tars", "1", "--no-progress", "--index-json"]
    assert main(["--params", str(params), *flags, "--download-workers", "2", "--verify", "checksum"]) == 0
    assert "staged 3 images from 1 of 6 tars (0 downloaded, 0 bytes)" in capsys.readouterr().out
    assert (read_manifest(tmp_path / "out" / "manifest.parquet")["json_offset"] > 0).all()  # --index-json
    assert len(list((tmp_path / "store" / "records").glob("*.json"))) == 1  # the params file's store_dir
    other_store = ["--store-dir", str(tmp_path / "other-store")]
    assert main(["--params", str(params), *flags, *other_store]) == 0
    assert len(list((tmp_path / "other-store" / "records").glob("*.json"))) == 1  # --store-dir wins
    assert main(["--params", str(params), "--source", "s3"]) == 2
    assert capsys.readouterr().err.strip() == "error: stage_sa1b.s3_bucket: required when source is 's3'"
    assert main(["--params", str(params), "--tar-dir", str(tmp_path / "missing")]) == 2
    assert "tar_dir not found" in capsys.readouterr().err
    assert main(["--params", str(params), "--verify", "md5"]) == 2
    assert "stage_sa1b.verify: Input should be 'size' or 'checksum' (got 'md5')" in capsys.readouterr().err


def test_module_entry_point_reports_errors_on_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "components.stage_sa1b", "--source", "local", "--tar-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'none'}: tar_dir not found"]


def test_link_rows_are_checked(tmp_path):
    links = tmp_path / "links.tsv"
    links.write_text("file_name\tcdn_link\nsa_000000.tar ftp://x/sa_000000.tar\n")
    with pytest.raises(InputError, match=r"links.tsv: line 2: expected"):
        run(make_config(links_file=links, output_dir=tmp_path / "out"))
    links.write_text("name,url\n")
    with pytest.raises(InputError, match=r"links.tsv: line 1: expected the header"):
        run(make_config(links_file=links, output_dir=tmp_path / "out"))
