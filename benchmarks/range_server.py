"""A throttled HTTP server with single-range support on 127.0.0.1, counting the body bytes it sends per file.

The scale rehearsal serves its generated SA-1B tars with it, slowly enough that staging can be killed
part-way, and reads the byte counts to tell what a re-run fetched again.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-$")
CHUNK = 16 * 1024


def _handler(root: Path, sent: Counter, delay_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/").split("?")[0]
            path = root / name
            if "/" in name or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            match = _RANGE.match(self.headers.get("Range", ""))
            start = int(match.group(1)) if match else 0
            if start >= len(data) and match:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if match else 200)
            self.send_header("Content-Length", str(len(data) - start))
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            for offset in range(start, len(data), CHUNK):
                chunk = data[offset : offset + CHUNK]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent[name] += len(chunk)
                time.sleep(delay_s)

    return Handler


@contextlib.contextmanager
def running(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run ``server`` in a thread; yields its base URL and shuts it down afterwards."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def serve(root: Path, *, delay_s: float = 0.0) -> Iterator[tuple[str, Counter]]:
    """Serve ``root`` on a free port of 127.0.0.1, sleeping ``delay_s`` after each 16 KiB chunk.

    Yields (base URL, bytes sent per file name).
    """
    sent: Counter = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, sent, delay_s))
    server.daemon_threads = True
    with running(server) as url:
        yield url, sent
