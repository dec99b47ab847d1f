"""Pipeline step: stage the SA-1B subset used for distillation (1% of the release in the paper).

Picks tars deterministically from ``seed`` and ``fraction`` (see :func:`select_tars`), obtains each from
the links file (HTTP), an S3 bucket or a local folder with resumable, verified downloads, streams its
images out with member checks, and writes ``manifest.parquet``. Layout under ``output_dir``::

    images/sa_000123/sa_226692.jpg   (+ .json with extract_json)
    staged/sa_000123.json            per-tar record: written last, so a tar listed here is fully staged
    tars/sa_000123.tar(.part)        downloads; deleted once staged unless keep_tars
    manifest.parquet                 one row per image, columns fsdino.data.sa1b.MANIFEST_COLUMNS

A second run finds every selected tar in ``staged/`` and fetches nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from components.downloads import Checksum, RetryPolicy, download, open_http, open_s3, verify_file
from components.params import DEFAULT_PARAMS, read_yaml, validate
from fsdino.data.sa1b import extract_sa1b_tar, write_manifest
from fsdino.errors import InputError
from fsdino.io.atomic import check_writable_dir, write_text_atomic

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
    max_images: int | None = Field(None, ge=1)
    extract_json: bool = False
    keep_tars: bool = False
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
        self, name: str, download_dir: Path, size: int | None, checksum: Checksum | None, retry: RetryPolicy
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
            open_body, destination, expected_size=size, checksum=checksum, retry=retry, progress=self.config.progress
        )
        return destination, fetched


def _record_path(output_dir: Path, name: str) -> Path:
    return output_dir / "staged" / f"{Path(name).stem}.json"


def read_record(output_dir: Path, name: str) -> dict | None:
    """The per-tar record of an earlier run, ``None`` when absent or unreadable."""
    try:
        return json.loads(_record_path(output_dir, name).read_text())
    except (OSError, ValueError):
        return None


def write_record(output_dir: Path, name: str, record: dict) -> None:
    write_text_atomic(_record_path(output_dir, name), json.dumps(record))


def _needs_restage(record: dict | None, needed: int | None, extract_json: bool, output_dir: Path) -> bool:
    """Whether a per-tar record is missing, too small for ``needed`` images, lacks JSON, or lost files."""
    if record is None or (extract_json and not record["include_json"]):
        return True
    if not record["complete"] and (needed is None or len(record["rows"]) < needed):
        return True
    rows = record["rows"] if needed is None else record["rows"][:needed]
    return not all((output_dir / row["image"]).is_file() for row in rows)


def _generate_synthetic_tars(config: StageSA1BConfig) -> StageSA1BConfig:
    """Write the demo's SA-1B-format tars (deterministic) and stage them as a local source."""
    from fsdino.data.synthetic_sa1b import write_synthetic_sa1b

    tar_dir = config.output_dir / "synthetic_tars"
    generated = write_synthetic_sa1b(
        tar_dir, num_tars=config.synthetic_tars, images_per_tar=config.synthetic_images_per_tar, seed=config.seed
    )
    return config.model_copy(update={"source": "local", "tar_dir": tar_dir, "links_file": generated.links_path})


def run(config: StageSA1BConfig) -> dict[str, Any]:
    """Stage the subset described by ``config``; returns a summary (selection, counts, bytes fetched)."""
    check_writable_dir(config.output_dir, what=f"{SECTION}.output_dir")
    config.check_source()
    if config.source == "synthetic":
        config = _generate_synthetic_tars(config)
    output_dir = config.output_dir
    store = TarStore(config)
    pool = store.names()
    selected = select_tars(pool, seed=config.seed, fraction=config.fraction, num_tars=config.num_tars)
    retry = RetryPolicy(retries=config.retries, backoff_s=config.backoff_s)
    summary: dict[str, Any] = {
        "pool": len(pool),
        "selected": selected,
        "used": [],
        "downloaded_tars": 0,
        "bytes_downloaded": 0,
        "staged_tars": 0,
        "reused_tars": 0,
        "corrupt_images": 0,
    }
    rows: list[dict[str, Any]] = []
    for name in tqdm(selected, desc="SA-1B tars", unit="tar", disable=not config.progress):
        needed = None if config.max_images is None else config.max_images - len(rows)
        record = read_record(output_dir, name)
        if _needs_restage(record, needed, config.extract_json, output_dir):
            checksum = Checksum.parse(config.checksums[name]) if name in config.checksums else None
            tar_path, fetched = store.obtain(name, output_dir / "tars", config.sizes.get(name), checksum, retry)
            if fetched == 0 and store.kind == "local":
                verify_file(tar_path, expected_size=config.sizes.get(name), checksum=checksum)
            summary["downloaded_tars"] += int(fetched > 0)
            summary["bytes_downloaded"] += fetched
            record = extract_sa1b_tar(
                tar_path, output_dir, tar_name=name, include_json=config.extract_json, limit=needed
            )
            summary["staged_tars"] += 1
            summary["corrupt_images"] += record.pop("corrupt_images", 0)
            write_record(output_dir, name, record)
            if store.kind != "local" and not config.keep_tars:
                tar_path.unlink(missing_ok=True)
        else:
            summary["reused_tars"] += 1
        rows.extend(record["rows"] if needed is None else record["rows"][:needed])
        summary["used"].append(name)
        if config.max_images is not None and len(rows) >= config.max_images:
            break
    manifest = write_manifest(rows, output_dir / "manifest.parquet")
    summary.update(images=len(rows), manifest=str(manifest))
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Stage the SA-1B subset for distillation.")
    parser.add_argument("--params", type=Path, default=None, help=f"params file (default: {DEFAULT_PARAMS} if present)")
    parser.add_argument("--section", default=SECTION)
    for flag in ("source", "links-file", "tar-dir", "s3-bucket", "s3-prefix", "endpoint-url", "region", "output-dir"):
        parser.add_argument(f"--{flag}")
    for flag in ("fraction", "num-tars", "seed", "max-images"):
        parser.add_argument(f"--{flag}")
    parser.add_argument("--extract-json", action="store_const", const=True)
    parser.add_argument("--keep-tars", action="store_const", const=True)
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
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"staged {summary['images']} images from {len(summary['used'])} of {summary['pool']} tars "
        f"({summary['downloaded_tars']} downloaded, {summary['bytes_downloaded']} bytes) → {summary['manifest']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
