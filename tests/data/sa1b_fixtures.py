"""Test helpers for SA-1B staging: a Range-capable HTTP server on 127.0.0.1, moto's S3 server, bad tars."""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.range_server import running
from fsdino.data.synthetic_sa1b import TAR_MTIME, add_tar_member

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class ServedFiles:
    """What the server did: bytes of body sent and requests seen per path, plus injected faults."""

    root: Path
    bytes_sent: Counter = field(default_factory=Counter)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    drop_after: dict[str, int] = field(default_factory=dict)  # path → cut the body after this many bytes, once
    fail_once: dict[str, int] = field(default_factory=dict)  # path → answer this HTTP status, once
    delay_s: dict[str, float] = field(default_factory=dict)  # path → wait this long before answering, always
    finished: list[str] = field(default_factory=list)  # paths whose whole response was sent, in that order
    ignore_range: bool = False


def _handler(state: ServedFiles) -> type[BaseHTTPRequestHandler]:
    class RangeHandler(BaseHTTPRequestHandler):
        """Serves ``state.root`` with single ``bytes=a-[b]`` ranges (206/416), counting body bytes."""

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/").split("?")[0]
            range_header = self.headers.get("Range")
            state.requests.append((name, range_header))
            path = state.root / name
            time.sleep(state.delay_s.get(name, 0.0))
            if name in state.fail_once:
                self.send_error(state.fail_once.pop(name))
                return
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start, end, status = 0, len(data) - 1, 200
            match = _RANGE.match(range_header or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                end = min(int(match.group(2)), end) if match.group(2) else end
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            cut = state.drop_after.pop(name, None)
            if cut is not None:
                body = body[:cut]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()
            state.bytes_sent[name] += len(body)
            state.finished.append(name)

    return RangeHandler


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[tuple[str, ServedFiles]]:
    """Serve ``root`` on 127.0.0.1 (a free port); yields (base URL, :class:`ServedFiles`)."""
    state = ServedFiles(root=root)
    with running(ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))) as url:
        yield url, state


def write_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A tar of regular files given as (name, payload) and of raw headers (links, devices …)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                member.mtime = TAR_MTIME
                archive.addfile(member)
            else:
                add_tar_member(archive, *member)
    return path


def symlink_member(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def jpeg_bytes(size: tuple[int, int] = (32, 24)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()
