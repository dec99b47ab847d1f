"""Teacher targets computed once, kept in shards on disk, read by the distillation loaders' workers.

The teacher's B×256×G×G embedding (G = 64 for SAM at 1,024 px) is pooled at once to the grid of every
distillation stage (area interpolation, as :func:`fsdino.models.teacher.to_student_grid`; 9², 18², 37²
cells at 126/252/518 px) and stored as fp16: 256·(81 + 324 + 1369)·2 B ≈ 0.9 MB per image instead of
2 MiB at 64². Rows of the SA-1B manifest are cut into fixed-size shards; under ``cache_dir``::

    shard-00012.safetensors   tensors "grid9", "grid18", "grid37": n×256×g×g fp16 (rows of shard 12)
    shard-00012.json          its manifest (teacher, grids, row range, keys, bytes, sha256): written last
    shard-00012.claim         while a process builds it (fsdino.io.claims)

A shard that exists and validates (:func:`check_shard`) is never recomputed; a truncated one, one of
another teacher or other images, or one with wrong shapes is named and rebuilt. The shards are split
across ranks (``shards[rank::world]``, which with a multi-node ``torchrun`` spans machines) and guarded
by claims, so two processes, on one machine or two sharing the folder, never build the same shard.
:func:`write_index` then lists every shard with its sha256 in one small JSON file, the DVC output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from fsdino.errors import InputError
from fsdino.io.atomic import write_bytes_atomic, write_json_atomic
from fsdino.io.claims import try_claim
from fsdino.models.teacher import SamTeacher, to_student_grid
from fsdino.progress import progress_disabled

EMBED_DIM = 256
STORED_DTYPE = torch.float16


def keys_digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


@dataclass(frozen=True)
class CacheSpec:
    """What every shard of one cache must hold: whose targets, at which grids, for which images."""

    teacher_id: str
    grids: tuple[int, ...]
    keys: tuple[str, ...]
    shard_images: int

    @property
    def num_shards(self) -> int:
        return -(-len(self.keys) // self.shard_images)

    def rows(self, shard: int) -> range:
        """The manifest rows of ``shard``."""
        return range(shard * self.shard_images, min((shard + 1) * self.shard_images, len(self.keys)))

    def bytes_per_image(self) -> int:
        return EMBED_DIM * sum(grid * grid for grid in self.grids) * STORED_DTYPE.itemsize


def shard_files(cache_dir: Path, shard: int) -> tuple[Path, Path, Path]:
    """(tensors, manifest, claim) of ``shard``."""
    stem = Path(cache_dir) / f"shard-{shard:05d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json"), stem.with_suffix(".claim")


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the size the file must have according to it."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError("header length out of range")
        header = json.loads(handle.read(length))
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    return header, 8 + length + end


def check_shard(cache_dir: Path, shard: int, spec: CacheSpec, *, checksum: bool = False) -> str | None:
    """``None`` when ``shard`` is complete and holds what ``spec`` asks, else why not (one line).

    Checks its manifest (teacher, grids, row range, keys), the tensor file's size against its own header
    and the manifest (truncation), and each tensor's shape and dtype; ``checksum`` re-hashes the file.
    """
    tensors, manifest_path, _ = shard_files(cache_dir, shard)
    if not manifest_path.is_file():  # a tensor file alone: its builder stopped before the end, or a deleted manifest
        return "manifest missing (tensor file without its manifest)" if tensors.is_file() else "not built"
    try:
        manifest = json.loads(manifest_path.read_text())
        rows = spec.rows(shard)
        if manifest.get("teacher") != spec.teacher_id:
            return f"built by teacher {manifest.get('teacher')!r}, not {spec.teacher_id!r}"
        if tuple(manifest.get("grids", ())) != spec.grids:
            return f"holds grids {manifest.get('grids')}, not {list(spec.grids)}"
        if manifest.get("rows") != [rows.start, rows.stop] or manifest.get("keys") != list(
            spec.keys[rows.start : rows.stop]
        ):
            return "built for other images (row range or keys differ)"
        header, expected_size = _safetensors_header(tensors)
        actual_size = tensors.stat().st_size
        if actual_size != expected_size or actual_size != manifest.get("bytes"):
            return f"truncated or rewritten ({actual_size} bytes, expected {manifest.get('bytes')})"
        for grid in spec.grids:
            entry = header.get(f"grid{grid}", {})
            shape = [len(rows), EMBED_DIM, grid, grid]
            if entry.get("shape") != shape or entry.get("dtype") != "F16":
                return f"grid{grid} is {entry.get('dtype')} {entry.get('shape')}, expected F16 {shape}"
        if checksum and _file_sha256(tensors) != manifest.get("sha256"):
            return "sha256 differs from its manifest"
    except FileNotFoundError:
        return "tensor file missing"
    except (OSError, ValueError, KeyError, TypeError, struct.error) as error:
        return f"unreadable ({type(error).__name__}: {error})"
    return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def pool_to_grids(embeddings: torch.Tensor, grids: Sequence[int]) -> dict[int, torch.Tensor]:
    """B×256×G×G teacher embeddings → {grid: B×256×grid×grid} fp16, pooled in float32."""
    embeddings = embeddings.float()
    return {grid: to_student_grid(embeddings, grid).to(STORED_DTYPE) for grid in grids}


def build_shard(
    teacher: SamTeacher,
    images: Dataset,
    shard: int,
    spec: CacheSpec,
    cache_dir: Path,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    num_workers: int = 0,
    heartbeat: Callable[[], None] | None = None,
    built_by: dict | None = None,
) -> dict:
    """Compute one shard and write it atomically (tensor file, then its manifest); returns the manifest.

    ``images`` yields ``{"image": 3×S×S at the teacher's input size, "index": manifest row}``; the
    teacher runs under ``autocast`` (the run's bf16 on GPUs) and its output is pooled in float32.
    """
    rows = spec.rows(shard)
    tensors_path, manifest_path, _ = shard_files(cache_dir, shard)
    manifest_path.unlink(missing_ok=True)  # an old manifest must never vouch for the new tensor file
    loader = DataLoader(
        Subset(images, list(rows)), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )  # fmt: skip
    parts: dict[int, list[torch.Tensor]] = {grid: [] for grid in spec.grids}
    for batch in loader:
        with torch.inference_mode(), autocast():
            embeddings = teacher(batch["image"].to(device, non_blocking=True))
        for grid, pooled in pool_to_grids(embeddings, spec.grids).items():
            parts[grid].append(pooled.cpu())
        if heartbeat is not None:
            heartbeat()
    tensors = {f"grid{grid}": torch.cat(chunks).contiguous() for grid, chunks in parts.items()}
    # One metadata key: safetensors writes several in a random order, and the shard's bytes (its sha256 in
    # the DVC-tracked index) must depend on its content only.
    metadata = {"fsdino": json.dumps({"teacher": spec.teacher_id, "rows": [rows.start, rows.stop]}, sort_keys=True)}
    payload = safetensors_bytes(tensors, metadata=metadata)
    write_bytes_atomic(tensors_path, payload)
    manifest = {
        "teacher": spec.teacher_id, "grids": list(spec.grids), "rows": [rows.start, rows.stop],
        "keys": list(spec.keys[rows.start : rows.stop]), "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(), "built_by": built_by or {},
    }  # fmt: skip
    write_json_atomic(manifest_path, manifest)
    return manifest


def build_shards(
    teacher_factory: Callable[[], SamTeacher],
    images: Dataset,
    spec: CacheSpec,
    cache_dir: Path,
    *,
    shards: Sequence[int],
    stale_after_s: float = 600.0,
    checksum: bool = False,
    progress: bool = True,
    **build_options,
) -> dict[str, list]:
    """Build those of ``shards`` that do not validate and that no live process has claimed.

    The teacher is built (``teacher_factory``) only when a shard needs it. Returns ``{"reused",
    "computed", "claimed_elsewhere"}`` (shard numbers) and ``"invalid"`` (``[shard, reason]`` pairs of the
    shards that existed but did not validate, each also printed as one line).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, list] = {"reused": [], "computed": [], "claimed_elsewhere": [], "invalid": []}
    teacher: SamTeacher | None = None
    for shard in tqdm(list(shards), desc="teacher shards", unit="shard", disable=not progress or progress_disabled()):
        reason = check_shard(cache_dir, shard, spec, checksum=checksum)
        if reason is None:
            summary["reused"].append(shard)
            continue
        claim = try_claim(shard_files(cache_dir, shard)[2], stale_after_s=stale_after_s)
        if claim is None:
            summary["claimed_elsewhere"].append(shard)
            continue
        try:
            reason = check_shard(cache_dir, shard, spec, checksum=checksum)  # finished while we looked?
            if reason is None:
                summary["reused"].append(shard)
                continue
            if reason != "not built":
                summary["invalid"].append([shard, reason])
                tqdm.write(f"{shard_files(cache_dir, shard)[0]}: {reason}; recomputing")
            for leftover in cache_dir.glob(f".shard-{shard:05d}.*.tmp.*"):  # a builder killed mid-write
                leftover.unlink(missing_ok=True)
            if teacher is None:
                teacher = teacher_factory()
            build_shard(teacher, images, shard, spec, cache_dir, heartbeat=claim.heartbeat, **build_options)
            summary["computed"].append(shard)
        finally:
            claim.release()
    return summary


def write_index(path: Path, cache_dir: Path, spec: CacheSpec) -> dict:
    """Write the cache's index (the DVC output): the spec and every shard's file, rows and sha256.

    Raises :class:`InputError` naming the first shard that does not validate.
    """
    shards = []
    for shard in range(spec.num_shards):
        reason = check_shard(cache_dir, shard, spec)
        if reason is not None:
            raise InputError(f"{shard_files(cache_dir, shard)[0]}: {reason}")
        manifest = json.loads(shard_files(cache_dir, shard)[1].read_text())
        tensors = shard_files(cache_dir, shard)[0]
        shards.append(
            {"file": tensors.name, "rows": manifest["rows"], "bytes": manifest["bytes"], "sha256": manifest["sha256"]}
        )
    index = {
        "teacher": spec.teacher_id, "grids": list(spec.grids), "shard_images": spec.shard_images,
        "images": len(spec.keys), "keys_sha256": keys_digest(spec.keys), "cache_dir": str(cache_dir),
        "bytes_per_image": spec.bytes_per_image(), "shards": shards,
    }  # fmt: skip
    write_json_atomic(path, index)
    return index


def remove_surplus_shards(cache_dir: Path, spec: CacheSpec) -> list[Path]:
    """Delete shard files numbered beyond the cache's shard count (left by a larger manifest)."""
    removed = []
    for path in sorted(Path(cache_dir).glob("shard-*.*")):
        number = path.stem.removeprefix("shard-")
        if number.isdigit() and int(number) >= spec.num_shards and path.suffix in (".safetensors", ".json"):
            path.unlink()
            removed.append(path)
    return removed


class TeacherTargets:
    """Read access to a sharded cache at one grid: ``targets[row]`` → 256×g×g fp16 (manifest row).

    Opened from the index written by :func:`write_index`; refuses an index of another teacher or other
    images, a grid the cache does not hold, and any shard whose file no longer matches the index (size,
    header). Shard files are opened lazily in each process, so a reader can be handed to loader workers.
    """

    def __init__(self, index: Path, *, teacher_id: str, keys: Sequence[str], grid: int) -> None:
        index = Path(index)
        try:
            self.index = json.loads(index.read_text())
        except (OSError, ValueError) as error:
            raise InputError(
                f"{index}: teacher cache index not found or unreadable (run the teacher_cache step)"
            ) from error
        if self.index.get("teacher") != teacher_id:
            raise InputError(f"{index}: cache was built by teacher {self.index.get('teacher')!r}, not {teacher_id!r}")
        if self.index.get("keys_sha256") != keys_digest(keys) or self.index.get("images") != len(keys):
            raise InputError(f"{index}: cache was built for other images than the manifest's")
        if grid not in self.index.get("grids", []):
            raise InputError(
                f"{index}: cache holds grids {self.index.get('grids')}, not {grid} (rebuild teacher_cache)"
            )
        self.grid = grid
        self.cache_dir = Path(self.index["cache_dir"])
        self.shard_images = int(self.index["shard_images"])
        self.files = [self.cache_dir / shard["file"] for shard in self.index["shards"]]
        for path, shard in zip(self.files, self.index["shards"], strict=True):
            try:
                _, expected = _safetensors_header(path)
                size = path.stat().st_size
            except (OSError, ValueError, struct.error) as error:
                raise InputError(f"{path}: teacher shard missing or unreadable (re-run teacher_cache)") from error
            if size != shard["bytes"] or size != expected:
                raise InputError(
                    f"{path}: teacher shard is {size} bytes, the index says {shard['bytes']} (re-run teacher_cache)"
                )
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.index["images"])

    def __getitem__(self, row: int) -> torch.Tensor:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        shard, local = divmod(int(row), self.shard_images)
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(str(self.files[shard]), framework="pt")
        return handle.get_slice(f"grid{self.grid}")[local : local + 1][0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}, "_pid": -1}


def shard_rows_by_rank(cache_dir: Path, spec: CacheSpec) -> dict[str, int]:
    """Rows each builder computed, from the shard manifests (``"<host>/rank<r>"`` → rows)."""
    counts: dict[str, int] = {}
    for shard in range(spec.num_shards):
        try:
            manifest = json.loads(shard_files(cache_dir, shard)[1].read_text())
        except (OSError, ValueError):
            continue
        built = manifest.get("built_by", {})
        name = f"{built.get('host', '?')}/rank{built.get('rank', '?')}"
        counts[name] = counts.get(name, 0) + manifest["rows"][1] - manifest["rows"][0]
    return dict(sorted(counts.items()))
