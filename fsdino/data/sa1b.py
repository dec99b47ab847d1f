"""SA-1B for distillation: the release's tars read in place as indexed shards, the manifest, a Dataset.

The release is 1,000 tars of flat ``./sa_<id>.jpg`` + ``./sa_<id>.json`` pairs. Staging
(``components/stage_sa1b.py``) never unpacks them: :func:`index_sa1b_tar` walks a tar's headers once,
checks every member, reads each image's header (not its pixels) and records where its bytes lie
(:data:`MANIFEST_COLUMNS`); the tars themselves are the shards. :class:`TarReader` reads an image's bytes
by a positioned read from its tar (:mod:`fsdino.data.sa1b_images` turns them into the encoder's squares).
No torch here, and pandas only when a manifest is written or read: staging never pays for either.

Why no extraction (docs/data_sa1b.md): 112k loose files cost an extra 110 GB, a DVC hash of each and
minutes of ``dvc status``; an offset index over the tars is a few MB and the tars stay immutable.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from fsdino.errors import InputError
from fsdino.io.atomic import atomic_path, write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

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
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    integers = ("image_id", "offset", "bytes", "json_offset", "json_bytes")
    frame = frame.astype({**dict.fromkeys(integers, "int64"), "width": "int32", "height": "int32"})
    write_json_atomic(path.parent / TARS_FILE, {"tars": tars})
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)
    return path


def read_manifest(path: Path | str) -> pd.DataFrame:
    """Load a staged manifest (parquet) and check its columns; raises :class:`InputError` naming the file."""
    import pandas as pd

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
