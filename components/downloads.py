"""Resumable, verified downloads over HTTP(S) and S3.

A file is fetched into ``<name>.part`` and renamed to ``<name>`` only once its size (the server's
Content-Length / S3 ContentLength, and the expected size when given) and checksum (sha256 or md5, when
given) are right, so a file under its final name is always complete. An existing ``.part`` is resumed with
a ranged request (HTTP ``Range`` / S3 ranged GET); a server that ignores the range restarts it from zero.
Transient failures (connection errors, timeouts, short reads, HTTP 408/429/5xx, S3 throttling) are retried
with exponential backoff; anything else becomes a one-line :class:`InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fsdino.errors import InputError
from fsdino.progress import progress_disabled

CHUNK_SIZE = 1 << 20
TRANSIENT_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"})
_CHECKSUM_PATTERN = re.compile(r"^(sha256:[0-9a-f]{64}|md5:[0-9a-f]{32})$")
_CONTENT_RANGE = re.compile(r"bytes (\d+-\d+|\*)/(\d+)")


class TransientError(Exception):
    """A failure worth retrying (the connection, not the request, was at fault)."""


class _RestartError(Exception):
    """The partial file does not fit the remote file: discard it and start again."""


@dataclass(frozen=True)
class Checksum:
    """An expected digest, written ``sha256:<hex>`` or ``md5:<hex>``."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        if not _CHECKSUM_PATTERN.match(text.lower()):
            raise InputError(f"checksum {text!r}: expected 'sha256:<64 hex>' or 'md5:<32 hex>'")
        algorithm, hexdigest = text.lower().split(":")
        return cls(algorithm, hexdigest)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts after the first, sleeping ``backoff_s × 2^attempt`` between them."""

    retries: int = 3
    backoff_s: float = 1.0


@dataclass
class Body:
    """An open response: bytes from ``start`` on, of a remote file of ``total`` bytes (when known)."""

    start: int
    total: int | None
    chunks: Iterator[bytes]


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, *, expected_size: int | None = None, checksum: Checksum | None = None) -> None:
    """Raise :class:`InputError` naming ``path`` unless its size and checksum are the expected ones."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise InputError(f"{path}: size mismatch: expected {expected_size} bytes, got {size}")
    if checksum is not None:
        actual = file_digest(path, checksum.algorithm)
        if actual != checksum.hexdigest:
            raise InputError(
                f"{path}: {checksum.algorithm} mismatch: expected {checksum.hexdigest}, got {actual} "
                "(corrupt or wrong file)"
            )


def _iter_read(stream: Any, transient: tuple[type[BaseException], ...]) -> Iterator[bytes]:
    """Chunks of ``stream`` until it is exhausted, then close it; ``transient`` errors become
    :class:`TransientError`."""
    try:
        while True:
            try:
                chunk = stream.read(CHUNK_SIZE)
            except transient as error:
                raise TransientError(f"connection broken ({type(error).__name__})") from error
            if not chunk:
                return
            yield chunk
    finally:
        stream.close()


def open_http(url: str, offset: int, timeout_s: float) -> Body:
    """GET ``url`` from byte ``offset`` (a ``Range`` request when ``offset > 0``)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416:
            match = _CONTENT_RANGE.match(error.headers.get("Content-Range", ""))
            if match and int(match.group(2)) == offset:
                return Body(start=offset, total=offset, chunks=iter(()))
            raise _RestartError("range not satisfiable") from error
        if error.code in TRANSIENT_HTTP_CODES:
            raise TransientError(f"HTTP {error.code}") from error
        hint = " (SA-1B links expire: fetch a fresh links file, or stage from S3 or a local folder)"
        raise InputError(
            f"{url.split('?')[0]}: HTTP {error.code} {error.reason}{hint if error.code in (403, 410) else ''}"
        ) from error
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise TransientError(str(getattr(error, "reason", error))) from error
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or not match.group(1).startswith(f"{offset}-"):
            response.close()
            raise _RestartError("unexpected Content-Range")
        total: int | None = int(match.group(2))
        start = offset
    else:  # 200: the whole file, whatever was asked
        total = int(length) if length is not None else None
        start = 0
    transient = (TimeoutError, ConnectionError, http.client.HTTPException)
    return Body(start=start, total=total, chunks=_iter_read(response, transient))


def open_s3(client: Any, bucket: str, key: str, offset: int) -> Body:
    """Ranged GET of ``s3://bucket/key`` from byte ``offset``; the size comes from a HEAD first."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = f"s3://{bucket}/{key}"
    try:
        total = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        if offset == total:
            return Body(start=offset, total=total, chunks=iter(()))
        if offset > total:
            raise _RestartError("partial file larger than the object")
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        response = client.get_object(Bucket=bucket, Key=key, **extra)
    except NoCredentialsError as error:
        raise InputError(
            f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
        ) from error
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in TRANSIENT_S3_CODES or status >= 500:
            raise TransientError(f"S3 {code or status}") from error
        missing = code in ("404", "NoSuchKey", "NotFound")
        raise InputError(f"{where}: {'not found' if missing else f'S3 error {code or status}'}") from error
    except BotoCoreError as error:
        raise TransientError(str(error)) from error
    return Body(start=offset, total=total, chunks=_iter_read(response["Body"], (BotoCoreError, OSError)))


class _PartFile:
    """The ``.part`` file and a running digest of its bytes (so resuming does not hash twice)."""

    def __init__(self, path: Path, algorithm: str | None) -> None:
        self.path = path
        self.algorithm = algorithm
        self.digest = hashlib.new(algorithm) if algorithm else None
        self.hashed = 0

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.digest = hashlib.new(self.algorithm) if self.algorithm else None
        self.hashed = 0

    def catch_up(self) -> None:
        """Hash whatever of the file is not hashed yet (bytes from an earlier run)."""
        if self.digest is None or self.hashed == self.size:
            return
        if self.hashed > self.size:
            self.digest, self.hashed = hashlib.new(self.algorithm), 0
        with open(self.path, "rb") as handle:
            handle.seek(self.hashed)
            while chunk := handle.read(CHUNK_SIZE):
                self.digest.update(chunk)
                self.hashed += len(chunk)


def download(
    open_body: Callable[[int], Body],
    destination: Path,
    *,
    expected_size: int | None = None,
    checksum: Checksum | None = None,
    retry: RetryPolicy | None = None,
    progress: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Fetch ``destination`` through ``open_body(offset)`` with resume, retries and verification.

    ``open_body`` is :func:`open_http` or :func:`open_s3` with all but the offset bound. Returns the number
    of bytes fetched in this call: 0 when ``destination`` already exists (its size is checked against
    ``expected_size``; its checksum was checked before it got its name).
    """
    retry = retry or RetryPolicy()
    if destination.exists():
        verify_file(destination, expected_size=expected_size)
        return 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = _PartFile(destination.with_name(destination.name + ".part"), checksum.algorithm if checksum else None)
    fetched = 0
    for attempt in range(retry.retries + 1):
        offset = part.size
        if expected_size is not None and offset > expected_size:
            part.reset()
            offset = 0
        try:
            if expected_size is not None and offset == expected_size:
                break
            body = open_body(offset)
            if expected_size is not None and body.total is not None and body.total != expected_size:
                raise InputError(f"{destination.name}: remote size {body.total} bytes, expected {expected_size}")
            if body.start == 0 and offset:
                part.reset()  # the server ignored the range: start over
            part.catch_up()
            bar = tqdm(
                total=body.total,
                initial=body.start,
                unit="B",
                unit_scale=True,
                desc=destination.name,
                disable=not progress or progress_disabled(),
            )
            with open(part.path, "ab") as handle, bar:
                for chunk in body.chunks:
                    handle.write(chunk)
                    if part.digest is not None:
                        part.digest.update(chunk)
                        part.hashed += len(chunk)
                    fetched += len(chunk)
                    bar.update(len(chunk))
            if body.total is not None and part.size != body.total:
                raise TransientError(f"short read: {part.size} of {body.total} bytes")
            break
        except _RestartError:
            part.reset()
        except TransientError as error:
            if attempt == retry.retries:
                raise InputError(
                    f"{destination.name}: download failed after {attempt + 1} attempts ({error})"
                ) from error
            sleep(retry.backoff_s * 2**attempt)
    else:
        raise InputError(f"{destination.name}: download did not complete after {retry.retries + 1} attempts")
    _finish(part, destination, expected_size, checksum)
    return fetched


def _finish(part: _PartFile, destination: Path, expected_size: int | None, checksum: Checksum | None) -> None:
    """Verify the ``.part`` file and rename it; a wrong checksum deletes it so the next run starts afresh."""
    part.path.touch(exist_ok=True)  # an empty remote file writes no chunk
    verify_file(part.path, expected_size=expected_size)
    if checksum is not None:
        part.catch_up()
        actual = part.digest.hexdigest()
        if actual != checksum.hexdigest:
            part.reset()
            raise InputError(
                f"{destination.name}: {checksum.algorithm} mismatch: expected {checksum.hexdigest}, got {actual} "
                "(download deleted)"
            )
    os.replace(part.path, destination)
