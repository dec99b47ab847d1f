"""Teacher embeddings computed once and kept on disk (fp16), shared by every distillation stage.

The cache is a ``.npy`` array N×256×g×g (g = the teacher's grid, 64 for SAM at 1024 px) indexed by the
manifest row, plus a JSON sidecar naming the teacher and the image keys it was computed for; a cache
built for another teacher or another manifest is refused. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fsdino.errors import InputError
from fsdino.models.teacher import SamTeacher


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def build_teacher_cache(
    teacher: SamTeacher,
    images: Dataset,
    keys: Sequence[str],
    path: Path,
    *,
    teacher_id: str,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> Path:
    """Run the teacher over ``images`` (items ``{"image": 3×S×S at the teacher's size, "index": int}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = teacher.grid_size
    tmp = path.with_name(f".{path.name}.tmp.npy")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(keys), 256, grid, grid))
    teacher = teacher.to(device)
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in tqdm(loader, desc="teacher embeddings", unit="batch"):
        embeddings = teacher(batch["image"].to(device)).float().cpu().numpy().astype(np.float16)
        array[batch["index"].numpy()] = embeddings
    array.flush()
    del array
    sidecar = {"teacher": teacher_id, "grid": grid, "keys": list(keys)}
    tmp_sidecar = path.with_name(f".{path.name}.tmp.json")
    tmp_sidecar.write_text(json.dumps(sidecar))
    os.replace(tmp, path)
    os.replace(tmp_sidecar, _sidecar(path))
    return path


class TeacherCache:
    """Read access to a cache built by :func:`build_teacher_cache` (memory-mapped, any number of workers)."""

    def __init__(self, path: Path, *, teacher_id: str, keys: Sequence[str]) -> None:
        self.path = Path(path)
        sidecar_path = _sidecar(self.path)
        if not self.path.is_file() or not sidecar_path.is_file():
            raise InputError(f"{self.path}: teacher cache not found (or its .json sidecar is missing)")
        sidecar = json.loads(sidecar_path.read_text())
        if sidecar.get("teacher") != teacher_id:
            raise InputError(f"{self.path}: cache was built by teacher {sidecar.get('teacher')!r}, not {teacher_id!r}")
        if sidecar.get("keys") != list(keys):
            raise InputError(f"{self.path}: cache was built for other images than the manifest's")
        self.array = np.load(self.path, mmap_mode="r")

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: B manifest rows → B×256×g×g float32."""
        return torch.from_numpy(np.ascontiguousarray(self.array[indices.numpy()])).float()


def cache_is_valid(path: Path, teacher_id: str, keys: Sequence[str]) -> bool:
    try:
        TeacherCache(path, teacher_id=teacher_id, keys=keys)
    except (InputError, ValueError, OSError):
        return False
    return True
