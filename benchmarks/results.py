"""What a benchmark run writes: one record per measured case, gathered into one JSON document per suite.

Document (``SCHEMA``)::

    {"schema", "suite", "size", "created", "environment": {device, device_name, torch, cuda, ...},
     "settings": {the BenchSize and suite options}, "records": [Record...], "summary": {ratios...}}

A record's ``throughput`` is ``batch_size / median_s`` in ``unit`` (``None`` when the case did not run:
``status`` says why and ``note`` gives the message).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks.timing import Timing
from fsdino.io.atomic import write_json_atomic

SCHEMA = "fsdino-benchmarks/1"
Status = Literal["ok", "oom", "unsupported", "error", "skipped"]
STATUSES = ("ok", "oom", "unsupported", "error", "skipped")
ROOT = Path(__file__).resolve().parents[1]

_DOCUMENT_KEYS = {"schema": str, "suite": str, "size": str, "created": str, "environment": dict}
_DOCUMENT_KEYS |= {"settings": dict, "records": list, "summary": dict}
_ENVIRONMENT_KEYS = ("device", "device_name", "torch", "dtype")
_RECORD_KEYS = {"name": str, "status": str, "batch_size": int, "image_size": int, "dtype": str, "unit": str}
_RECORD_KEYS |= {"params": dict, "note": str}
_RECORD_OPTIONAL = ("throughput", "median_s", "timing", "peak_memory_bytes", "memory_kind")


@dataclass
class Record:
    """One measured case (a model at a batch size, a training variant, …)."""

    name: str
    batch_size: int
    image_size: int
    dtype: str
    unit: str
    status: Status = "ok"
    timing: Timing | None = None
    peak_memory_bytes: int | None = None
    memory_kind: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def throughput(self) -> float | None:
        """Items per second (``batch_size`` items per timed iteration)."""
        if self.status != "ok" or self.timing is None:
            return None
        return self.batch_size / self.timing.median_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "dtype": self.dtype,
            "unit": self.unit,
            "throughput": self.throughput,
            "median_s": None if self.timing is None else self.timing.median_s,
            "timing": None if self.timing is None else self.timing.to_dict(),
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_kind": self.memory_kind,
            "params": self.params,
            "note": self.note,
        }


def dtype_label(amp_dtype: torch.dtype | None) -> str:
    """``"bfloat16-autocast"`` / ``"float16-autocast"`` under autocast, else ``"float32"``."""
    return "float32" if amp_dtype is None else f"{str(amp_dtype).removeprefix('torch.')}-autocast"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_slug(device: torch.device) -> str:
    """``cpu``, or the GPU's name in lower-case words joined by ``-`` (``nvidia-h100-80gb-hbm3``)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def environment(device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "device": device.type,
        "device_name": device_name(device),
        "dtype": dtype_label(amp_dtype),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # others' work skews CPU timings
        # a copy of the tree without .git (a lent GPU machine's) is told its commit by BENCH_GIT_COMMIT
        "git_commit": _git("rev-parse", "HEAD") or os.environ.get("BENCH_GIT_COMMIT"),
        "git_dirty": None if dirty is None else bool(dirty),
    }


def document(
    *,
    suite: str,
    size: str,
    environment: dict[str, Any],
    settings: dict[str, Any],
    records: list[Record],
    summary: dict[str, Any],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "suite": suite,
        "size": size,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": environment,
        "settings": settings,
        "records": [record.to_dict() for record in records],
        "summary": summary,
    }


def _check_keys(where: str, item: dict, keys: dict[str, type], problems: list[str]) -> None:
    for key, kind in keys.items():
        if key not in item:
            problems.append(f"{where}: missing {key!r}")
        elif not isinstance(item[key], kind):
            problems.append(f"{where}: {key!r} should be {kind.__name__}, got {type(item[key]).__name__}")


def validate_document(doc: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing every way ``doc`` departs from the schema."""
    problems: list[str] = []
    _check_keys("document", doc, _DOCUMENT_KEYS, problems)
    if doc.get("schema") != SCHEMA:
        problems.append(f"document: schema should be {SCHEMA!r}, got {doc.get('schema')!r}")
    problems += [f"environment: missing {k!r}" for k in _ENVIRONMENT_KEYS if k not in doc.get("environment", {})]
    for index, record in enumerate(doc.get("records", [])):
        where = f"records[{index}]"
        _check_keys(where, record, _RECORD_KEYS, problems)
        problems += [f"{where}: missing {key!r}" for key in _RECORD_OPTIONAL if key not in record]
        if record.get("status") not in STATUSES:
            problems.append(f"{where}: status {record.get('status')!r} not in {STATUSES}")
        if record.get("status") == "ok" and not isinstance(record.get("throughput"), float):
            problems.append(f"{where}: an 'ok' record needs a float throughput")
    if problems:
        raise ValueError("benchmark document does not match the schema:\n" + "\n".join(problems))


def output_stem(out_dir: Path, device: torch.device, suite: str, day: dt.date | None = None) -> Path:
    """``<out>/<device>-<date>-<suite>``, with ``-2``, ``-3``… appended rather than overwrite a result."""
    day = day or dt.datetime.now(dt.UTC).date()
    stem = out_dir / f"{device_slug(device)}-{day.isoformat()}-{suite}"
    candidate, number = stem, 1
    while candidate.with_suffix(".json").exists():
        number += 1
        candidate = stem.with_name(f"{stem.name}-{number}")
    return candidate


def write_document(doc: dict[str, Any], stem: Path) -> Path:
    """Validate ``doc`` and write it to ``<stem>.json`` (through a temporary file: never half-written)."""
    validate_document(doc)
    path = stem.with_suffix(".json")
    write_json_atomic(path, doc)
    return path


@dataclass
class SuiteResult:
    """What a suite returns: its records, the ratios that answer the issue, and its own options."""

    records: list[Record]
    summary: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
