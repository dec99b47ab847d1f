"""A staged benchmark on disk: ``manifest.json`` + ``splits/*.txt``, written by the ``components/stage_*``
steps and opened here by training and evaluation.

``manifest.json`` names the dataset, its protocol, the raw data ``root`` (relative to the staged folder
when possible) and, per split, its file and the source options; split files hold ``<image> <class>``
pairs (``fsdino.data.splits``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsdino.data.base import SegmentationSource
from fsdino.data.episodes import Episode, class_uniform_episodes, every_query_episodes, walk_episodes
from fsdino.data.imageio import write_json_atomic
from fsdino.data.splits import Pair, class_counts, read_pairs, write_pairs
from fsdino.errors import InputError

MANIFEST = "manifest.json"
SPLIT_DIR = "splits"
#: How each dataset draws its test episodes (PROTOCOL-NOTES).
PROTOCOLS = {
    "pascal": "walk",
    "synthetic": "walk",
    "coco": "class_uniform",
    "fss": "every_query",
    "davis": "first_frame",
}


@dataclass(frozen=True)
class Split:
    """One split of a staged benchmark: its pairs and the source to load them from."""

    name: str
    dataset: str
    source: SegmentationSource
    pairs: list[Pair]

    @property
    def protocol(self) -> str:
        return PROTOCOLS[self.dataset]


def split_entry(name: str, pairs: Sequence[Pair], **source_options: Any) -> dict[str, Any]:
    """The manifest's record of one split: file, counts and how to open its source."""
    return {
        "file": f"{SPLIT_DIR}/{name}.txt",
        "pairs": len(pairs),
        "images": len({image_id for image_id, _ in pairs}),
        "class_counts": {str(class_id): count for class_id, count in class_counts(pairs).items()},
        "source": source_options,
    }


def write_benchmark(
    out_dir: Path | str,
    *,
    dataset: str,
    root: Path | str,
    splits: Mapping[str, Sequence[Pair]],
    source_options: Mapping[str, Mapping[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write every split file, then ``manifest.json`` last (each file atomically); return the manifest."""
    if dataset not in PROTOCOLS:
        raise InputError(f"dataset: expected one of {', '.join(PROTOCOLS)}, got {dataset!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_options = source_options or {}
    entries = {name: split_entry(name, pairs, **source_options.get(name, {})) for name, pairs in splits.items()}
    for name, pairs in splits.items():
        write_pairs(out_dir / entries[name]["file"], pairs)
    root_text = os.path.relpath(Path(root).resolve(), out_dir.resolve())
    manifest = {"dataset": dataset, "protocol": PROTOCOLS[dataset], "root": root_text, **extra, "splits": entries}
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(stage_dir: Path | str) -> dict[str, Any]:
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (run the dataset's stage first)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if manifest.get("dataset") not in PROTOCOLS or "splits" not in manifest:
        raise InputError(f"{path}: expected 'dataset' (one of {', '.join(PROTOCOLS)}) and 'splits'")
    return manifest


def _open_source(dataset: str, root: Path, options: dict[str, Any], pairs: list[Pair]) -> SegmentationSource:
    # Imported here so that opening one dataset does not import the others' dependencies.
    if dataset in ("pascal", "synthetic"):
        from fsdino.data.pascal import PascalVOC

        return PascalVOC(root, image_ids=sorted({image_id for image_id, _ in pairs}))
    if dataset == "coco":
        from fsdino.data.coco import CocoInstances

        return CocoInstances(root, **options)
    if dataset == "fss":
        from fsdino.data.fss import FSS1000

        return FSS1000(root, **options)
    from fsdino.data.davis import Davis17

    return Davis17(root, **options)


def open_split(stage_dir: Path | str, name: str) -> Split:
    """Open split ``name`` (``fold0_train``, ``fold0_val``, ``test``, …) of a staged benchmark."""
    stage_dir = Path(stage_dir)
    manifest = read_manifest(stage_dir)
    if name not in manifest["splits"]:
        known = ", ".join(manifest["splits"])
        raise InputError(f"{stage_dir / MANIFEST}: no split {name!r} (expected one of {known})")
    entry = manifest["splits"][name]
    pairs = read_pairs(stage_dir / entry["file"])
    root = Path(manifest["root"])
    root = root if root.is_absolute() else stage_dir / root
    source = _open_source(manifest["dataset"], root, dict(entry.get("source", {})), pairs)
    return Split(name, manifest["dataset"], source, pairs)


def evaluation_episodes(split: Split, shot: int, num_episodes: int = 1000, seed: int = 0) -> list[Episode]:
    """The split's test episodes by its dataset's protocol (FSS and DAVIS: every query once)."""
    if split.protocol == "walk":
        return walk_episodes(split.pairs, shot, num_episodes, seed)
    if split.protocol == "class_uniform":
        return class_uniform_episodes(split.pairs, shot, num_episodes, seed)
    if split.protocol == "every_query":
        return every_query_episodes(split.pairs, shot, seed)
    from fsdino.data.davis import Davis17, first_frame_episodes

    if not isinstance(split.source, Davis17) or shot != 1:
        raise InputError(f"split {split.name}: the DAVIS protocol is one-shot (expected shot 1, got {shot})")
    return first_frame_episodes(split.source, split.pairs)
