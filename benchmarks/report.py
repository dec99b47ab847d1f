"""A benchmark document as a short markdown section: one table row per record, then the summary."""

from __future__ import annotations

from typing import Any

MIB = 2**20


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One bullet per top-level entry; a nested entry's fields go on its line as ``name value``."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {_number(item)}" for name, item in value.items())
        else:
            value = _number(value)
        lines.append(f"- {key}: {value}")
    return lines


def record_row(record: dict[str, Any]) -> str:
    median = record["median_s"]
    memory = record["peak_memory_bytes"]
    status = record["status"] if not record["note"] else f"{record['status']}: {record['note'][:80]}"
    cells = [
        f"`{record['name']}`",
        str(record["batch_size"]),
        str(record["image_size"]),
        _number(None if median is None else median * 1000),
        f"{_number(record['throughput'])} {record['unit']}" if record["throughput"] is not None else "—",
        _number(None if memory is None else memory / MIB),
        status.replace("|", "/").replace("\n", " "),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(doc: dict[str, Any]) -> str:
    """The document as markdown: a heading naming the device, the table, the summary as a list."""
    env = doc["environment"]
    memory_kinds = sorted({r["memory_kind"] for r in doc["records"] if r["memory_kind"]})
    lines = [
        f"### `{doc['suite']}` at size `{doc['size']}`",
        "",
        f"{env['device_name']} ({env['device']}), torch {env['torch']}, {env['dtype']}, {doc['created']}"
        f"; peak memory: {', '.join(memory_kinds) or 'n/a'}",
        "",
        "| case | batch | px | median ms | throughput | peak MiB | status |",
        "|---|---:|---:|---:|---:|---:|---|",
        *(record_row(record) for record in doc["records"]),
        "",
    ]
    if doc["summary"]:
        lines += ["Summary:", "", *summary_lines(doc["summary"]), ""]
    return "\n".join(lines)
