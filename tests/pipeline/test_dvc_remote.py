"""DVC remotes for real: ``dvc push`` / ``dvc pull`` through dvc-s3 to moto's S3 server on 127.0.0.1,
and the project's default local remote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **CREDENTIALS, "HOME": str(cwd)}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket="fsdino-dvc")
    yield endpoint
    server.stop()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC project with the repository's DVC config and one tracked data folder."""
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc("init", "-q", cwd=repo)
    shutil.copy2(ROOT / ".dvc/config", repo / ".dvc/config")
    data = repo / "outputs/data"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("support-query pairs\n")
    (data / "b.bin").write_bytes(bytes(range(256)) * 64)
    dvc("add", "outputs/data", cwd=repo)
    return repo


def forget_local_copies(repo: Path) -> None:
    shutil.rmtree(repo / "outputs/data")
    shutil.rmtree(repo / ".dvc/cache")


def test_push_and_pull_through_s3(project: Path, s3_endpoint: str):
    dvc("remote", "add", "s3", "s3://fsdino-dvc/store", cwd=project)
    dvc("remote", "modify", "s3", "endpointurl", s3_endpoint, cwd=project)
    dvc("push", "-r", "s3", cwd=project)
    listed = boto3.client("s3", endpoint_url=s3_endpoint, **_boto_credentials()).list_objects_v2(Bucket="fsdino-dvc")
    assert listed["KeyCount"] >= 3  # two files and the directory listing
    forget_local_copies(project)
    dvc("pull", "-r", "s3", cwd=project)
    assert (project / "outputs/data/a.txt").read_text() == "support-query pairs\n"
    assert (project / "outputs/data/b.bin").read_bytes() == bytes(range(256)) * 64


def test_the_default_local_remote_lives_beside_the_clone(project: Path):
    dvc("push", cwd=project)  # no -r: the repository's default remote
    assert (project.parent / "fsdino-dvc-remote").is_dir()
    forget_local_copies(project)
    dvc("pull", cwd=project)
    assert (project / "outputs/data/a.txt").read_text() == "support-query pairs\n"


def test_linked_outputs_share_the_cache_and_an_atomic_rewrite_never_changes_it(project: Path):
    """The project's ``cache.type`` (reflink, else hardlink): after a checkout, outputs are the cache's objects,
    not copies; a step writing through :func:`fsdino.io.atomic.write_bytes_atomic` replaces the link."""
    from fsdino.io.atomic import write_bytes_atomic

    assert dvc("config", "cache.type", cwd=project).stdout.strip() == "reflink,hardlink,copy"
    dvc("checkout", "--relink", cwd=project)
    data = project / "outputs/data/b.bin"
    (cached,) = [
        path for path in (project / ".dvc/cache").rglob("*") if path.is_file() and path.stat().st_size == 16384
    ]
    probe = subprocess.run(["cp", "--reflink=always", str(data), str(project / "probe")], capture_output=True)
    if probe.returncode != 0:  # no copy-on-write here (ext4): hardlinks, one inode for both
        assert os.path.samefile(data, cached) and data.stat().st_nlink == 2
    original = cached.read_bytes()
    write_bytes_atomic(data, b"rewritten by a step")
    assert cached.read_bytes() == original and not os.path.samefile(data, cached)
    assert "modified" in dvc("status", cwd=project).stdout
    dvc("checkout", "--force", cwd=project)
    assert data.read_bytes() == original
