"""Pipeline step: obtain the pretrained weights a profile needs from their official sources.

Each file is downloaded once (resumable, size and checksum verified, see ``components/downloads.py``)
into ``weights.dir`` and recorded with its sha256 in ``weights.json``; DVC caches the folder, so a
second ``dvc repro`` or a ``dvc pull`` never fetches them again. The demo profile needs none.

    python -m components.weights [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from components.cli import params_main
from components.config import Params
from components.downloads import Checksum, RetryPolicy, download, file_digest, open_http
from fsdino.io.atomic import write_json_atomic


def run(params: Params, args: argparse.Namespace | None = None) -> dict[str, Any]:
    settings = params.weights
    folder = settings.dir
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for item in settings.files:
        destination = folder / item.name
        checksum = Checksum.parse(f"sha256:{item.sha256}") if item.sha256 else None
        fetched = 0
        if not destination.is_file():
            fetched = download(
                partial(open_http, item.url, timeout_s=settings.timeout_s), destination, expected_size=item.size,
                checksum=checksum, retry=RetryPolicy(retries=settings.retries, backoff_s=1.0), progress=True,
            )  # fmt: skip
        digest = file_digest(destination, "sha256")
        if item.sha256 and digest != item.sha256:
            raise_mismatch(destination, item.sha256, digest)
        records.append({"name": item.name, "url": item.url, "sha256": digest, "bytes_fetched": fetched})
    write_json_atomic(folder / "weights.json", {"files": records})
    return {"dir": str(folder), "files": [r["name"] for r in records]}


def raise_mismatch(path: Path, expected: str, actual: str) -> None:
    from fsdino.errors import InputError

    raise InputError(f"{path}: sha256 mismatch: expected {expected}, got {actual} (delete it to download again)")


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
