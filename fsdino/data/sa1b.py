"""SA-1B for distillation: the release's tars read in place as indexed shards, the manifest, a Dataset.

The release is 1,000 tars of flat ``./sa_<id>.jpg`` + ``./sa_<id>.json`` pairs. Staging
(``components/stage_sa1b.py``) never unpacks them: :func:`index_sa1b_tar` walks a tar's headers once,
checks every member, reads each image's header (not its pixels) and records where its bytes lie
(:data:`MANIFEST_COLUMNS`); the tars themselves are the shards. :class:`SA1BImages` reads one image by a
positioned read of its bytes from its tar and returns it resized to a square the encoder accepts (126,
252, 518 px in the paper's three stages), with a key that names the image for the teacher cache.

Why no extraction (docs/data_sa1b.md): 112k loose files cost an extra 110 GB, a DVC hash of each and
minutes of ``dvc status``; an offset index over the tars is a few MB and the tars stay immutable.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fsdino.errors import InputError
from fsdino.io.atomic import atomic_path, write_json_atomic

#: One row per staged image: the tar it lives in and the byte range of its JPEG (``offset``, ``bytes``),
#: and of its annotation JSON (``json_offset``/``json_bytes``, -1 unless indexed), plus the header size.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "key", "image_id", "tar", "offset", "bytes", "json_offset", "json_bytes", "width", "height",
)  # fmt: skip
#: The file beside ``manifest.parquet`` that says where each tar is and what it was verified as.
TARS_FILE = "tars.json"
_END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE  # two zero blocks close every well-formed tar


def member_basename(tar_name: str, member: tarfile.TarInfo) -> str | None:
    """The flat file name of a regular member (``./sa_1.jpg`` → ``sa_1.jpg``), ``None`` for the root entry.

    Raises :class:`InputError` naming the tar and the member for anything that is not a flat plain file
    (absolute names, ``..``, nested paths, links, devices, FIFOs): the release has none, so such a tar is
    not SA-1B.
    """
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        raise InputError(f"{tar_name}: member {name!r} has an absolute path (expected flat ./sa_<id>.jpg members)")
    if ".." in parts:
        raise InputError(f"{tar_name}: member {name!r} points outside the archive ('..' in its path)")
    relative = [part for part in parts if part != "."]
    if member.isdir() and not relative:
        return None  # the archive's own "./" entry
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "directory" if member.isdir() else "special file"
        raise InputError(f"{tar_name}: member {name!r} is a {kind} (only regular files are allowed)")
    if len(relative) != 1:
        raise InputError(f"{tar_name}: member {name!r} is nested (expected flat ./sa_<id>.jpg members)")
    return relative[0]


def _tar_error(tar_name: str, error: BaseException) -> InputError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if first_line.startswith("file could not be opened"):
        first_line = "not a tar archive"
    return InputError(f"{tar_name}: corrupt or truncated tar ({first_line.rstrip(':')})")


def image_key(file_name: str) -> tuple[str, int]:
    """``"sa_226692.jpg"`` → ``("sa_226692", 226692)``; the id is -1 for names outside the release's pattern."""
    key = PurePosixPath(file_name).stem
    digits = key.removeprefix("sa_")
    return key, int(digits) if key.startswith("sa_") and digits.isdigit() else -1


def _header_size(handle: Any) -> tuple[int, int] | None:
    """(width, height) from an image header (PIL reads only what it needs), ``None`` when unreadable."""
    try:
        with Image.open(handle) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def _iter_members(tar_path: Path, tar_name: str) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """(archive, member, flat name) of every regular member, after checking it; then the end-of-archive."""
    size = tar_path.stat().st_size
    with tarfile.open(tar_path, "r:") as archive:
        for member in archive:
            basename = member_basename(tar_name, member)
            if basename is None:
                continue
            if member.offset_data + member.size > size:
                raise tarfile.ReadError(f"member {member.name!r} ends past the end of the file")
            yield archive, member, basename
        archive.fileobj.seek(archive.offset)
        marker = archive.fileobj.read(_END_OF_ARCHIVE)
        if len(marker) < _END_OF_ARCHIVE or marker.count(0) != _END_OF_ARCHIVE:
            raise tarfile.ReadError("no end-of-archive marker")


def index_sa1b_tar(tar_path: Path, *, tar_name: str | None = None, include_json: bool = False) -> dict[str, Any]:
    """Index one SA-1B tar in place: every image's byte range and header size, nothing extracted.

    Every member is checked with :func:`member_basename`; a member whose data would lie past the end of
    the file, or a missing end-of-archive marker (a tar cut at a member boundary), is a truncated tar.
    Unreadable JPEG headers are skipped with a warning and counted. Returns ``{"tar", "include_json",
    "rows", "corrupt_images"}`` with ``rows`` in archive order following :data:`MANIFEST_COLUMNS`.
    Raises :class:`InputError` naming the tar (and the member).
    """
    tar_name = tar_name or tar_path.name
    rows: dict[str, dict[str, Any]] = {}
    annotations: dict[str, tuple[int, int]] = {}
    corrupt = 0
    try:
        for archive, member, basename in _iter_members(tar_path, tar_name):
            key, image_id = image_key(basename)
            lower = basename.lower()
            if lower.endswith(".json"):
                annotations[key] = (member.offset_data, member.size)
            elif lower.endswith(".jpg"):
                size = _header_size(archive.extractfile(member))
                if size is None:
                    corrupt += 1
                    warnings.warn(f"{tar_name}: member {basename!r} is not a readable image, skipped", stacklevel=2)
                    continue
                rows[key] = {
                    "key": key, "image_id": image_id, "tar": tar_name, "offset": member.offset_data,
                    "bytes": member.size, "json_offset": -1, "json_bytes": -1, "width": size[0], "height": size[1],
                }  # fmt: skip
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise _tar_error(tar_name, error) from error
    if include_json:
        for key, (offset, length) in annotations.items():
            if key in rows:
                rows[key].update(json_offset=offset, json_bytes=length)
    return {"tar": tar_name, "include_json": include_json, "rows": list(rows.values()), "corrupt_images": corrupt}


def write_manifest(rows: list[dict[str, Any]], tars: dict[str, dict[str, Any]], path: Path) -> Path:
    """Write ``manifest.parquet`` (the rows) and ``tars.json`` beside it (tar name → ``{"path", "size",
    "checksum", "images"}``), each atomically. Relative tar paths are taken from the manifest's folder."""
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    integers = ("image_id", "offset", "bytes", "json_offset", "json_bytes")
    frame = frame.astype({**dict.fromkeys(integers, "int64"), "width": "int32", "height": "int32"})
    write_json_atomic(path.parent / TARS_FILE, {"tars": tars})
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)
    return path


def read_manifest(path: Path | str) -> pd.DataFrame:
    """Load a staged manifest (parquet) and check its columns; raises :class:`InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: SA-1B manifest not found (run the stage_sa1b step first)")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for foreign or truncated files
        raise InputError(f"{path}: not a readable parquet manifest ({type(error).__name__})") from error
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {', '.join(missing)} (expected {list(MANIFEST_COLUMNS)})")
    return frame.reset_index(drop=True)


def read_tar_table(manifest: Path | str) -> dict[str, Path]:
    """Tar name → its path, from the ``tars.json`` beside ``manifest`` (relative paths from that folder)."""
    path = Path(manifest).parent / TARS_FILE
    try:
        table = json.loads(path.read_text())["tars"]
        return {name: Path(manifest).parent / entry["path"] for name, entry in table.items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: missing or not a tar table (run the stage_sa1b step first)") from error


class TarReader:
    """Positioned reads of byte ranges from the shard tars; one open file per tar and process.

    The handles are opened lazily and re-opened after a fork, so one reader can be handed to DataLoader
    workers. ``os.pread`` has no shared file position, so threads may read concurrently.
    """

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self._handles: dict[str, int] = {}
        self._pid = os.getpid()

    def read(self, tar: str, offset: int, length: int) -> bytes:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()  # inherited descriptors are shared with the parent
        handle = self._handles.get(tar)
        if handle is None:
            try:
                handle = self._handles[tar] = os.open(self.paths[tar], os.O_RDONLY)
            except (OSError, KeyError) as error:
                where = self.paths.get(tar, tar)
                raise InputError(
                    f"{where}: SA-1B shard not found (re-run the sa1b stage: it fetches only missing tars)"
                ) from error
        data = os.pread(handle, length, offset)
        if len(data) != length:
            raise OSError(f"{self.paths[tar]}: short read at {offset} ({len(data)} of {length} bytes)")
        return data

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "_handles": {}, "_pid": -1}

    def __del__(self) -> None:
        for handle in getattr(self, "_handles", {}).values():
            with contextlib.suppress(OSError):
                os.close(handle)


def load_square_image(source: Path | bytes, image_size: int, resize: Literal["stretch", "center_crop"]) -> torch.Tensor:
    """Decode a JPEG (a path or its bytes) into a 3×S×S float32 tensor in [0, 1] (S = ``image_size``).

    ``stretch`` resizes the whole image to S×S, bicubic (the teacher sees the whole image too);
    ``center_crop`` resizes the short side to S and crops the centre. JPEG draft mode decodes large images
    at a reduced DCT scale that is still at least S, which makes 1,500 px → 126 px several times faster.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.draft("RGB", (image_size, image_size))
        image = image.convert("RGB")
        if resize == "center_crop":
            scale = image_size / min(image.size)
            width, height = max(image_size, round(image.width * scale)), max(image_size, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.BICUBIC)
            left, top = (width - image_size) // 2, (height - image_size) // 2
            image = image.crop((left, top, left + image_size, top + image_size))
        else:
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)


class SA1BImages(Dataset):
    """The staged SA-1B images for distillation, read from their tars.

    Args:
        manifest: path of ``manifest.parquet`` written by the staging step (``tars.json`` beside it says
            where the tars are).
        image_size: side S of the square output; a multiple of ``multiple_of`` (DINOv2's patch, 14).
        resize: ``"stretch"`` (default) or ``"center_crop"``, see :func:`load_square_image`.
        multiple_of: required divisor of ``image_size`` (16 for SAM's 1,024 px teacher input).

    Each item is ``{"image": 3×S×S float32 in [0, 1], "index": int, "key": "sa_<id>"}``; ``index`` is the
    manifest row and ``key`` the image's name, stable across manifests, for caching teacher embeddings.
    An unreadable image is skipped with a warning naming the tar and the image: the next readable row is
    returned instead, with its own index and key.
    """

    def __init__(
        self,
        manifest: Path | str,
        image_size: int,
        *,
        resize: Literal["stretch", "center_crop"] = "stretch",
        multiple_of: int = 14,
    ) -> None:
        if image_size <= 0 or image_size % multiple_of:
            raise InputError(f"image_size: expected a positive multiple of {multiple_of}, got {image_size}")
        if resize not in ("stretch", "center_crop"):
            raise InputError(f"resize: expected 'stretch' or 'center_crop', got {resize!r}")
        frame = read_manifest(manifest)
        self.reader = TarReader(read_tar_table(manifest))
        self.image_size = image_size
        self.resize = resize
        self.keys: list[str] = [str(key) for key in frame["key"]]
        self.tars: list[str] = [str(tar) for tar in frame["tar"]]
        self.ranges: np.ndarray = frame[["offset", "bytes"]].to_numpy(dtype=np.int64)
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.keys)

    def read_bytes(self, row: int) -> bytes:
        """The JPEG bytes of manifest row ``row``."""
        offset, length = self.ranges[row]
        return self.reader.read(self.tars[row], int(offset), int(length))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        for step in range(len(self)):
            row = (index + step) % len(self)
            try:
                image = load_square_image(self.read_bytes(row), self.image_size, self.resize)
            except (UnidentifiedImageError, ValueError, SyntaxError, OSError) as error:
                if isinstance(error, InputError):
                    raise
                if row not in self._warned:
                    self._warned.add(row)
                    where = f"{self.reader.paths.get(self.tars[row], self.tars[row])}:{self.keys[row]}.jpg"
                    warnings.warn(f"{where}: unreadable image skipped ({error})", RuntimeWarning, stacklevel=2)
                continue
            return {"image": image, "index": row, "key": self.keys[row]}
        raise InputError(f"{len(self)} manifest images: none could be read")
