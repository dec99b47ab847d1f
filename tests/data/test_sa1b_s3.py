"""Staging SA-1B from S3, against moto's S3 server on 127.0.0.1 (a real HTTP endpoint, fake credentials)."""

from __future__ import annotations

import hashlib
import uuid

import boto3
import pandas as pd
import pytest
from moto.server import ThreadedMotoServer

from components.stage_sa1b import StageSA1BConfig, run, select_tars
from fsdino.data.synthetic_sa1b import write_synthetic_sa1b
from fsdino.errors import InputError

PREFIX = "datasets/sa1b"


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint, monkeypatch, tmp_path):
    """A fresh bucket holding six synthetic tars under ``PREFIX``; yields (name, release)."""
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    release = write_synthetic_sa1b(tmp_path / "release", num_tars=6, images_per_tar=2, seed=1)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"sa1b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    for path in release.tar_paths:
        client.upload_file(str(path), name, f"{PREFIX}/{path.name}")
    client.put_object(Bucket=name, Key=f"{PREFIX}/README.txt", Body=b"not a tar")
    return name, release


def make_config(bucket_name: str, **fields) -> StageSA1BConfig:
    output = fields["output_dir"]
    fields.setdefault("store_dir", output.with_name(f"{output.name}-store"))
    return StageSA1BConfig(
        source="s3", s3_bucket=bucket_name, s3_prefix=PREFIX, progress=False, backoff_s=0.0, **fields
    )


def test_s3_listing_selection_manifest_and_idempotence(bucket, moto_endpoint, tmp_path):
    name, release = bucket
    config = make_config(name, endpoint_url=moto_endpoint, fraction=0.5, output_dir=tmp_path / "out")
    first = run(config)
    assert first["pool"] == 6  # README.txt is not a tar
    assert first["selected"] == select_tars([path.name for path in release.tar_paths], seed=0, fraction=0.5)
    assert first["bytes_downloaded"] == sum(
        (release.tar_paths[0].parent / tar).stat().st_size for tar in first["selected"]
    )
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(manifest) == 3 * 2 and list(dict.fromkeys(manifest["tar"])) == first["selected"]  # fetched at once
    stored = tmp_path / "out-store" / "tars"
    assert sorted(path.name for path in stored.iterdir()) == sorted(first["selected"])
    for tar in first["selected"]:
        assert (stored / tar).read_bytes() == (release.tar_paths[0].parent / tar).read_bytes()
    second = run(config)
    assert (second["bytes_downloaded"], second["downloaded_tars"], second["reused_tars"]) == (0, 0, 3)


def test_s3_resumes_a_partial_download_with_a_ranged_get(bucket, moto_endpoint, monkeypatch, tmp_path):
    name, release = bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # the endpoint from the environment this time
    tar = select_tars([path.name for path in release.tar_paths], seed=0, fraction=0.01)[0]
    data = (release.tar_paths[0].parent / tar).read_bytes()
    part = tmp_path / "out-store" / "tars" / f"{tar}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:4096])
    checksum = "md5:" + hashlib.md5(data).hexdigest()
    config = make_config(name, num_tars=1, output_dir=tmp_path / "out", checksums={tar: checksum})
    summary = run(config)
    assert summary["bytes_downloaded"] == len(data) - 4096
    assert (tmp_path / "out-store" / "tars" / tar).read_bytes() == data and not part.exists()


def test_s3_errors_name_the_object(bucket, moto_endpoint, tmp_path):
    name, release = bucket
    wrong = {tar.name: "sha256:" + "1" * 64 for tar in release.tar_paths}
    with pytest.raises(InputError, match=r"sa_\d{6}\.tar: sha256 mismatch"):
        run(make_config(name, endpoint_url=moto_endpoint, num_tars=1, checksums=wrong, output_dir=tmp_path / "a"))
    store = tmp_path / "a-store"
    assert not list((store / "tars").iterdir()) and not (store / "records").exists()  # rejected: nothing kept
    links = tmp_path / "links.tsv"
    links.write_text("file_name\tcdn_link\nsa_000999.tar\thttps://expired.invalid/sa_000999.tar\n")
    config = make_config(name, endpoint_url=moto_endpoint, links_file=links, num_tars=1, output_dir=tmp_path / "b")
    with pytest.raises(InputError, match=rf"s3://{name}/{PREFIX}/sa_000999.tar: not found"):
        run(config)
