"""Pipeline step: stage the SA-1B subset used for distillation (1% of the release in the paper).

Picks tars deterministically from ``seed`` and ``fraction`` (see :func:`select_tars`), obtains each from
the links file (HTTP), an S3 bucket or a local folder with resumable, verified downloads (several tars at
once), indexes each in place (:func:`fsdino.data.sa1b.index_sa1b_tar`: nothing is extracted, the tars are
the shards) and writes the manifest. Two places::

    store_dir/ (default outputs/.work/sa1b; never deleted by DVC or the flow)
        tars/sa_000123.tar(.part)   downloads, resumed from the .part after a crash; kept: they are the shards
        records/sa_000123.json      per-tar record (path, size, mtime, checksum, index): written last, so a
                                    tar with a record is complete; a re-run checks size and mtime and reuses it
        synthetic/                  the demo's generated tars (source "synthetic")
    output_dir/ (the DVC output, a few MB)
        manifest.parquet            one row per image: tar, byte range, size (fsdino.data.sa1b.MANIFEST_COLUMNS)
        tars.json                   tar name → path, size, checksum, image count

A second run finds every selected tar recorded and fetches nothing; a run killed mid-download resumes
the unfinished tars from their ``.part`` files and never fetches a recorded one again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from components.downloads import Checksum, RetryPolicy, download, file_digest, open_http, open_s3, verify_file
from components.params import DEFAULT_PARAMS, read_yaml, validate
from fsdino.data.sa1b import index_sa1b_tar, write_manifest
from fsdino.errors import InputError, report_error
from fsdino.io.atomic import check_writable_dir, write_text_atomic
from fsdino.progress import progress_disabled

SECTION = "stage_sa1b"
TAR_NAME = re.compile(r"^sa_\d{6}\.tar$")
LINKS_HEADER = ["file_name", "cdn_link"]


class StageSA1BConfig(BaseModel):
    """The ``stage_sa1b`` section of ``params.yaml``."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["http", "s3", "local", "synthetic"] = "http"
    links_file: Path | None = None  # TSV ``file_name<TAB>cdn_link``; its names define the pool of tars
    tar_dir: Path | None = None  # source "local": a folder holding sa_NNNNNN.tar files
    s3_bucket: str | None = None  # source "s3": tars at s3://<bucket>/<prefix>/sa_NNNNNN.tar
    s3_prefix: str = ""
    endpoint_url: str | None = None  # default: AWS_ENDPOINT_URL, then AWS's own endpoint
    region: str | None = None
    fraction: float = Field(0.01, gt=0, le=1)
    num_tars: int | None = Field(None, ge=1)  # overrides fraction
    seed: int = 0
    output_dir: Path = Path("data/sa1b")
    store_dir: Path = Path("outputs/.work/sa1b")  # tars, partial downloads, per-tar records: outside DVC's outputs
    max_images: int | None = Field(None, ge=1)
    index_json: bool = False  # also record where each image's annotation JSON lies in its tar
    download_workers: int = Field(4, ge=1)  # tars fetched (and indexed) at the same time
    verify: Literal["size", "checksum"] = "size"  # what a re-run checks of a recorded tar (checksum: re-hash)
    sizes: dict[str, int] = Field(default_factory=dict)  # tar name → bytes
    checksums: dict[str, str] = Field(default_factory=dict)  # tar name → "sha256:<hex>" | "md5:<hex>"
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    progress: bool = True
    # source "synthetic" (the CPU demo): SA-1B-format tars generated under output_dir/synthetic_tars
    synthetic_tars: int = Field(4, ge=1)
    synthetic_images_per_tar: int = Field(50, ge=1)

    @field_validator("checksums")
    @classmethod
    def _checksums_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            try:
                Checksum.parse(text)
            except InputError as error:
                raise ValueError(str(error)) from None
        return {name: text.lower() for name, text in value.items()}

    def check_source(self) -> None:
        """Raise :class:`InputError` naming the field the chosen source needs when it is missing."""
        if self.source == "synthetic":
            return
        needed = {"http": "links_file", "s3": "s3_bucket", "local": "tar_dir"}[self.source]
        if getattr(self, needed) is None:
            raise InputError(f"{SECTION}.{needed}: required when source is {self.source!r}")


def select_tars(names: list[str], *, seed: int, fraction: float, num_tars: int | None = None) -> list[str]:
    """The tars to stage, in the order they are staged.

    Rule: rank every name by ``sha256(f"{seed}:{name}")`` (hex, ascending) and take the first
    ``num_tars``, or ``ceil(fraction × len(names))``. The rank of a name depends on the seed and the name
    only, so the choice is the same in any language and whatever order the pool is listed in.
    """
    pool = sorted(set(names))
    count = num_tars if num_tars is not None else math.ceil(round(fraction * len(pool), 9))
    if not pool or count > len(pool):
        raise InputError(f"selection: asked for {count} tars but the pool holds {len(pool)}")
    ranked = sorted(pool, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    return ranked[:count]


def read_links(path: Path) -> dict[str, str]:
    """Tar name → URL from the release's links TSV; rows for other files than ``sa_NNNNNN.tar`` are skipped."""
    if not path.is_file():
        raise InputError(f"{path}: links file not found")
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip().split("\t") != LINKS_HEADER:
        raise InputError(f"{path}: line 1: expected the header 'file_name<TAB>cdn_link'")
    links: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.strip().split("\t")
        if fields == [""]:
            continue
        if len(fields) != 2 or not fields[1].startswith(("http://", "https://")):
            raise InputError(f"{path}: line {number}: expected '<file name><TAB>http(s) URL'")
        if TAR_NAME.match(fields[0]):
            links[fields[0]] = fields[1]
    if not links:
        raise InputError(f"{path}: no sa_NNNNNN.tar rows")
    return links


class TarStore:
    """Where the tars come from: ``names()`` is the pool, ``obtain()`` gives a local path to one tar."""

    def __init__(self, config: StageSA1BConfig) -> None:
        self.config = config
        self.kind = config.source
        self.links = read_links(config.links_file) if config.links_file is not None else None
        self.prefix = config.s3_prefix.strip("/")
        self.client: Any = None
        if self.kind == "s3":
            import boto3

            endpoint = config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
            self.client = boto3.client("s3", endpoint_url=endpoint, region_name=config.region)

    def _s3_key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def names(self) -> list[str]:
        """The links file's tars when there is one (the same pool whatever the source), else a listing."""
        if self.links is not None:
            return sorted(self.links)
        if self.kind == "local":
            if not self.config.tar_dir.is_dir():
                raise InputError(f"{self.config.tar_dir}: tar_dir not found")
            names = [path.name for path in self.config.tar_dir.iterdir()]
        else:
            from botocore.exceptions import BotoCoreError, ClientError

            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.s3_bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            try:
                names = [item["Key"].rsplit("/", 1)[-1] for page in pages for item in page.get("Contents", [])]
            except (BotoCoreError, ClientError) as error:
                raise InputError(f"s3://{self.config.s3_bucket}/{self.prefix}: cannot list ({error})") from error
        names = sorted(name for name in names if TAR_NAME.match(name))
        if not names:
            raise InputError(f"{self.config.tar_dir or self.config.s3_bucket}: no sa_NNNNNN.tar files")
        return names

    def obtain(
        self,
        name: str,
        download_dir: Path,
        size: int | None,
        checksum: Checksum | None,
        retry: RetryPolicy,
        *,
        progress: bool = False,
    ) -> tuple[Path, int]:
        """A local path to tar ``name`` and the bytes downloaded for it (0 for a local or kept tar)."""
        if self.kind == "local":
            path = self.config.tar_dir / name
            if not path.is_file():
                raise InputError(f"{path}: selected tar not found in tar_dir")
            return path, 0
        if self.kind == "s3":
            open_body = partial(open_s3, self.client, self.config.s3_bucket, self._s3_key(name))
        else:
            if self.links is None or name not in self.links:
                raise InputError(f"{self.config.links_file}: no link for {name}")
            open_body = partial(open_http, self.links[name], timeout_s=self.config.timeout_s)
        destination = download_dir / name
        fetched = download(
            open_body, destination, expected_size=size, checksum=checksum, retry=retry, progress=progress
        )
        return destination, fetched


def _record_path(store_dir: Path, name: str) -> Path:
    return store_dir / "records" / f"{Path(name).stem}.json"


def read_record(store_dir: Path, name: str) -> dict | None:
    """The per-tar record of an earlier run, ``None`` when absent or unreadable."""
    try:
        return json.loads(_record_path(store_dir, name).read_text())
    except (OSError, ValueError):
        return None


def write_record(store_dir: Path, name: str, record: dict) -> None:
    write_text_atomic(_record_path(store_dir, name), json.dumps(record))


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def record_is_current(record: dict | None, path: Path, config: StageSA1BConfig) -> bool:
    """Whether a recorded tar can be used as it is: same file (path, size, mtime), the configured size
    and checksum, JSON indexed when asked; with ``verify: checksum`` its digest is computed again."""
    name = Path(path).name
    if record is None or record.get("path") != str(path) or (config.index_json and not record["include_json"]):
        return False
    if _file_state(path) != (record["size"], record["mtime_ns"]):
        return False
    if name in config.sizes and config.sizes[name] != record["size"]:
        return False
    wanted = config.checksums.get(name)
    if wanted is not None and record.get("checksum") != wanted:
        return False
    if config.verify == "checksum" and record.get("checksum"):
        checksum = Checksum.parse(record["checksum"])
        return file_digest(path, checksum.algorithm) == checksum.hexdigest
    return True


def _generate_synthetic_tars(config: StageSA1BConfig) -> StageSA1BConfig:
    """Write the demo's SA-1B-format tars (deterministic) into the store and stage them as a local source.

    Files whose bytes are already there are left untouched (same mtime), so their records stay current.
    """
    import filecmp
    import shutil
    import tempfile

    from fsdino.data.synthetic_sa1b import write_synthetic_sa1b

    tar_dir = config.store_dir / "synthetic"
    tar_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=config.store_dir))
    try:
        generated = write_synthetic_sa1b(
            scratch, num_tars=config.synthetic_tars, images_per_tar=config.synthetic_images_per_tar, seed=config.seed
        )
        for fresh in scratch.iterdir():
            target = tar_dir / fresh.name
            if not (target.is_file() and filecmp.cmp(fresh, target, shallow=False)):
                os.replace(fresh, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    links = tar_dir / generated.links_path.name
    return config.model_copy(update={"source": "local", "tar_dir": tar_dir, "links_file": links})


class _Stager:
    """Obtains, verifies and indexes one tar; safe to call from several threads for different tars."""

    def __init__(self, config: StageSA1BConfig, store: TarStore) -> None:
        self.config, self.store = config, store
        self.retry = RetryPolicy(retries=config.retries, backoff_s=config.backoff_s)
        self.quiet = config.download_workers > 1 or not config.progress  # one overall bar instead

    def local_path(self, name: str) -> Path:
        if self.store.kind == "local":
            return self.config.tar_dir / name
        return self.config.store_dir / "tars" / name

    def __call__(self, name: str) -> dict[str, Any]:
        """``{"record", "fetched", "reused"}`` for tar ``name``."""
        config, path = self.config, self.local_path(name)
        record = read_record(config.store_dir, name)
        if record_is_current(record, path, config):
            return {"record": record, "fetched": 0, "reused": True}
        if record is not None:  # it no longer vouches for the file: a check failing below must not leave it behind
            _record_path(config.store_dir, name).unlink(missing_ok=True)
        wanted = config.checksums.get(name)
        checksum = Checksum.parse(wanted) if wanted else None
        path, fetched = self.store.obtain(
            name, config.store_dir / "tars", config.sizes.get(name), checksum, self.retry, progress=not self.quiet
        )
        if fetched == 0 and (self.store.kind == "local" or checksum is not None):
            verify_file(path, expected_size=config.sizes.get(name), checksum=checksum)
        for leftover in (config.store_dir / "records").glob(f".{Path(name).stem}.*.tmp.json"):  # killed mid-write
            leftover.unlink(missing_ok=True)
        index = index_sa1b_tar(path, tar_name=name, include_json=config.index_json)
        size, mtime_ns = _file_state(path)
        record = {"path": str(path), "size": size, "mtime_ns": mtime_ns, "checksum": wanted, **index}
        write_record(config.store_dir, name, record)
        return {"record": record, "fetched": fetched, "reused": False}


def _in_order(stage: _Stager, names: list[str], workers: int) -> Iterator[tuple[str, Future]]:
    """Results of ``stage(name)`` in selection order, keeping up to ``workers`` tars in flight ahead.

    Closing the generator cancels the tars not yet started (a ``max_images`` cap reached early); those
    already running finish, and what they fetched stays in the store for the next run.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sa1b") as pool:
        pending: list[tuple[str, Future]] = []
        queue = iter(names)
        try:
            while True:
                while len(pending) < workers and (name := next(queue, None)) is not None:
                    pending.append((name, pool.submit(stage, name)))
                if not pending:
                    return
                yield pending.pop(0)
        finally:
            for _, future in pending:
                future.cancel()


def _tar_entry(record: dict, output_dir: Path) -> dict[str, Any]:
    """The manifest's view of a tar: its path from the manifest's folder when it lies under the working
    folder (portable between clones), else absolute."""
    path = Path(record["path"]).absolute()
    inside = path.is_relative_to(Path.cwd())
    shown = os.path.relpath(path, output_dir.absolute()) if inside else str(path)
    return {"path": shown, "size": record["size"], "checksum": record["checksum"], "images": len(record["rows"])}


def run(config: StageSA1BConfig) -> dict[str, Any]:
    """Stage the subset described by ``config``; returns a summary (selection, counts, bytes fetched)."""
    check_writable_dir(config.output_dir, what=f"{SECTION}.output_dir")
    check_writable_dir(config.store_dir, what=f"{SECTION}.store_dir")
    config.check_source()
    if config.source == "synthetic":
        config = _generate_synthetic_tars(config)
    output_dir = config.output_dir
    store = TarStore(config)
    pool = store.names()
    selected = select_tars(pool, seed=config.seed, fraction=config.fraction, num_tars=config.num_tars)
    summary: dict[str, Any] = {
        "pool": len(pool), "selected": selected, "used": [], "downloaded_tars": 0, "bytes_downloaded": 0,
        "downloaded": {}, "staged_tars": 0, "reused_tars": 0, "corrupt_images": 0,
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    tars: dict[str, dict[str, Any]] = {}
    stager = _Stager(config, store)
    results = _in_order(stager, selected, config.download_workers)
    bar = tqdm(total=len(selected), desc="SA-1B tars", unit="tar", disable=not config.progress or progress_disabled())
    try:
        for name, future in results:
            outcome = future.result()
            record = outcome["record"]
            summary["downloaded"][name] = outcome["fetched"]
            summary["downloaded_tars"] += int(outcome["fetched"] > 0)
            summary["bytes_downloaded"] += outcome["fetched"]
            summary["reused_tars" if outcome["reused"] else "staged_tars"] += 1
            summary["corrupt_images"] += 0 if outcome["reused"] else record["corrupt_images"]
            needed = None if config.max_images is None else config.max_images - len(rows)
            rows.extend(record["rows"] if needed is None else record["rows"][:needed])
            tars[name] = _tar_entry(record, output_dir)
            summary["used"].append(name)
            bar.update()
            if config.max_images is not None and len(rows) >= config.max_images:
                break
    finally:
        results.close()
        bar.close()
    manifest = write_manifest(rows, tars, output_dir / "manifest.parquet")
    summary.update(images=len(rows), manifest=str(manifest))
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Stage the SA-1B subset for distillation.")
    parser.add_argument("--params", type=Path, default=None, help=f"params file (default: {DEFAULT_PARAMS} if present)")
    parser.add_argument("--section", default=SECTION)
    for flag in (
        "source",
        "links-file",
        "tar-dir",
        "s3-bucket",
        "s3-prefix",
        "endpoint-url",
        "region",
        "output-dir",
        "store-dir",
        "verify",
    ):
        parser.add_argument(f"--{flag}")
    for flag in ("fraction", "num-tars", "seed", "max-images", "download-workers"):
        parser.add_argument(f"--{flag}")
    parser.add_argument("--index-json", action="store_const", const=True)
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    return parser


def config_from_args(argv: list[str] | None) -> StageSA1BConfig:
    """The section of the params file (when there is one), overridden by the flags given."""
    args = vars(_parser().parse_args(argv))
    params, section = args.pop("params"), args.pop("section")
    path = params if params is not None else DEFAULT_PARAMS
    data: dict[str, Any] = {}
    source = "command line"
    if params is not None or path.is_file():
        content = read_yaml(path)
        if section not in content:
            raise InputError(f"{path}: missing section {section!r}")
        data, source = dict(content[section] or {}), str(path)
    data.update({key: value for key, value in args.items() if value is not None})
    return validate(StageSA1BConfig, data, source, section)


def main(argv: list[str] | None = None) -> int:
    try:
        summary = run(config_from_args(argv))
    except Exception as error:  # a user error (or a full disk) is one line; anything else keeps its traceback
        return report_error(error)
    print(
        f"staged {summary['images']} images from {len(summary['used'])} of {summary['pool']} tars "
        f"({summary['downloaded_tars']} downloaded, {summary['bytes_downloaded']} bytes) → {summary['manifest']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
