"""Split files: one ``<image id> <class id>`` pair a line, sorted, written atomically.

A split is the list of (image, class) pairs a fold trains or tests on; episodes draw their queries
and supports from it. The format is plain text so that splits can be diffed and tracked by DVC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from fsdino.data.imageio import write_text_atomic
from fsdino.errors import InputError

Pair = tuple[str, int]


def sort_pairs(pairs: Iterable[Pair]) -> list[Pair]:
    """Deterministic order: by image id, then class id (duplicates removed)."""
    return sorted(set(pairs))


def format_pairs(pairs: Iterable[Pair]) -> str:
    lines = []
    for image_id, class_id in pairs:
        if any(character.isspace() for character in image_id):
            raise InputError(f"image id {image_id!r}: expected no whitespace (split files are space-separated)")
        lines.append(f"{image_id} {class_id}\n")
    return "".join(lines)


def write_pairs(path: Path | str, pairs: Iterable[Pair]) -> None:
    """Write ``pairs`` (in the given order) atomically."""
    write_text_atomic(path, format_pairs(pairs))


def read_pairs(path: Path | str) -> list[Pair]:
    """Read a split file; a malformed line is an :class:`InputError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: split file not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise InputError(f"{path}:{number}: expected '<image id> <class id>', got {line!r}")
        pairs.append((fields[0], int(fields[1])))
    return pairs


def group_by_class(pairs: Iterable[Pair]) -> dict[int, list[str]]:
    """class id → image ids holding it, both in first-seen order."""
    images: dict[int, list[str]] = defaultdict(list)
    for image_id, class_id in pairs:
        images[class_id].append(image_id)
    return dict(images)


def class_counts(pairs: Iterable[Pair]) -> dict[int, int]:
    """class id → number of pairs, sorted by class id (for manifests)."""
    counts: dict[int, int] = defaultdict(int)
    for _, class_id in pairs:
        counts[class_id] += 1
    return dict(sorted(counts.items()))
