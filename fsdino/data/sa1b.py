"""SA-1B for the distillation stage: safe reading of the release's tars, the image manifest, a Dataset.

The release is 1,000 tars of flat ``./sa_<id>.jpg`` + ``./sa_<id>.json`` pairs. Staging
(``components/stage_sa1b.py``) streams the images out of the tars with :func:`iter_sa1b_members` and lists
them in a manifest (:data:`MANIFEST_COLUMNS`); :class:`SA1BImages` reads that manifest and returns each
image resized to a square the encoder accepts (126, 252, 518 px in the paper's three stages), with a key
that names the image for caching the teacher's (SAM's) embeddings.
"""

from __future__ import annotations

import io
import shutil
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
from fsdino.io.atomic import atomic_path

#: One row per staged image. ``image`` and ``json`` are paths relative to the manifest's folder
#: (``json`` is null unless the annotations were staged); ``bytes`` is the JPEG's file size.
MANIFEST_COLUMNS: tuple[str, ...] = ("key", "image_id", "image", "json", "tar", "width", "height", "bytes")
MEMBER_SUFFIXES = (".jpg", ".json")
_END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE  # two zero blocks close every well-formed tar


def member_basename(tar_name: str, member: tarfile.TarInfo) -> str | None:
    """The flat file name of a regular member (``./sa_1.jpg`` → ``sa_1.jpg``), ``None`` for the root entry.

    Raises :class:`InputError` naming the tar and the member for anything that could write outside the
    target folder or is not a plain file: absolute names, ``..``, nested paths, links, devices, FIFOs.
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


def iter_sa1b_members(tar_path: Path, *, include_json: bool = False) -> Iterator[tuple[str, bytes]]:
    """Stream ``(file name, payload)`` for each ``.jpg`` member (and ``.json`` when asked), in archive order.

    Every member is checked with :func:`member_basename` before anything is yielded for it; other regular
    files are skipped. Once the archive is exhausted its end-of-archive marker must be present, so a tar
    cut at a member boundary is reported as truncated too. Raises :class:`InputError` naming the tar.
    """
    tar_name = tar_path.name
    wanted = (".jpg", ".json") if include_json else (".jpg",)
    try:
        with tarfile.open(tar_path, "r:*") as archive:
            for member in archive:
                basename = member_basename(tar_name, member)
                if basename is None or not basename.lower().endswith(wanted):
                    continue
                handle = archive.extractfile(member)
                payload = handle.read() if handle is not None else b""
                if len(payload) != member.size:
                    raise tarfile.ReadError("unexpected end of data")
                yield basename, payload
            archive.fileobj.seek(archive.offset)
            marker = archive.fileobj.read(_END_OF_ARCHIVE)
            if len(marker) < _END_OF_ARCHIVE or marker.count(0) != _END_OF_ARCHIVE:
                raise tarfile.ReadError("no end-of-archive marker")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise _tar_error(tar_name, error) from error


def image_key(file_name: str) -> tuple[str, int]:
    """``"sa_226692.jpg"`` → ``("sa_226692", 226692)``; the id is -1 for names outside the release's pattern."""
    key = PurePosixPath(file_name).stem
    digits = key.removeprefix("sa_")
    return key, int(digits) if key.startswith("sa_") and digits.isdigit() else -1


def _image_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, ``None`` when it is not a readable image."""
    try:
        with Image.open(io.BytesIO(payload)) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def extract_sa1b_tar(
    tar_path: Path,
    output_dir: Path,
    *,
    tar_name: str | None = None,
    include_json: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Stream a tar's images into ``output_dir/images/<tar stem>/`` and return its manifest rows.

    Members go to a temporary sibling folder that is renamed at the end, so a failure (an unsafe member,
    a truncated tar) leaves nothing behind. ``limit`` stops after that many images. Returns
    ``{"tar", "complete", "include_json", "rows", "corrupt_images"}``; ``rows`` follow
    :data:`MANIFEST_COLUMNS` with paths relative to ``output_dir``. Unreadable JPEGs are skipped with a
    warning and counted.
    """
    tar_name = tar_name or tar_path.name
    stem = PurePosixPath(tar_name).stem
    final_dir = output_dir / "images" / stem
    work_dir = final_dir.with_name(f".{stem}.tmp")
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    rows: dict[str, dict[str, Any]] = {}
    written_json: dict[str, str] = {}  # key → JSON file name
    complete, corrupt = True, 0
    try:
        for basename, payload in iter_sa1b_members(tar_path, include_json=include_json):
            key, image_id = image_key(basename)
            if basename.lower().endswith(".json"):
                (work_dir / basename).write_bytes(payload)
                written_json[key] = basename
                continue
            if limit is not None and len(rows) >= limit:
                complete = False
                break
            size = _image_size(payload)
            if size is None:
                corrupt += 1
                warnings.warn(f"{tar_name}: member {basename!r} is not a readable image, skipped", stacklevel=2)
                continue
            (work_dir / basename).write_bytes(payload)
            rows[key] = {
                "key": key,
                "image_id": image_id,
                "image": f"images/{stem}/{basename}",
                "json": None,
                "tar": tar_name,
                "width": size[0],
                "height": size[1],
                "bytes": len(payload),
            }
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    for key, basename in written_json.items():
        if key in rows:
            rows[key]["json"] = f"images/{stem}/{basename}"
        else:
            (work_dir / basename).unlink()  # an annotation without a staged image
    shutil.rmtree(final_dir, ignore_errors=True)
    work_dir.rename(final_dir)
    return {
        "tar": tar_name,
        "complete": complete,
        "include_json": include_json,
        "rows": list(rows.values()),
        "corrupt_images": corrupt,
    }


def write_manifest(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the manifest rows as parquet, atomically (temporary file, then rename)."""
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    frame = frame.astype({"image_id": "int64", "width": "int32", "height": "int32", "bytes": "int64"})
    frame["json"] = frame["json"].astype("string")
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


def load_square_image(path: Path, image_size: int, resize: Literal["stretch", "center_crop"]) -> torch.Tensor:
    """Decode a JPEG into a 3×S×S float32 tensor in [0, 1] (S = ``image_size``), bicubic resampling.

    ``stretch`` resizes the whole image to S×S (the teacher sees the whole image too); ``center_crop``
    resizes the short side to S and crops the centre. JPEG draft mode decodes large images at a reduced
    DCT scale that is still at least S, which makes 1,500 px → 126 px several times faster.
    """
    with Image.open(path) as image:
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
    """The staged SA-1B images for distillation.

    Args:
        manifest: path of ``manifest.parquet`` written by the staging step; image paths are relative to
            its folder unless ``root`` is given.
        image_size: side S of the square output; a multiple of ``multiple_of`` (DINOv2's patch, 14).
        resize: ``"stretch"`` (default) or ``"center_crop"``, see :func:`load_square_image`.
        root: folder the manifest's relative paths start from (default: the manifest's folder).
        multiple_of: required divisor of ``image_size`` (16 for SAM's 1,024 px teacher input).

    Each item is ``{"image": 3×S×S float32 in [0, 1], "index": int, "key": "sa_<id>"}``; ``index`` is the
    manifest row and ``key`` the image's name, stable across manifests, for caching teacher embeddings.
    An unreadable image is skipped with a warning naming the file: the next readable row is returned
    instead, with its own index and key.
    """

    def __init__(
        self,
        manifest: Path | str,
        image_size: int,
        *,
        resize: Literal["stretch", "center_crop"] = "stretch",
        root: Path | str | None = None,
        multiple_of: int = 14,
    ) -> None:
        if image_size <= 0 or image_size % multiple_of:
            raise InputError(f"image_size: expected a positive multiple of {multiple_of}, got {image_size}")
        if resize not in ("stretch", "center_crop"):
            raise InputError(f"resize: expected 'stretch' or 'center_crop', got {resize!r}")
        frame = read_manifest(manifest)
        self.root = Path(root) if root is not None else Path(manifest).parent
        self.image_size = image_size
        self.resize = resize
        self.paths: list[Path] = [self.root / relative for relative in frame["image"]]
        self.keys: list[str] = [str(key) for key in frame["key"]]
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        for offset in range(len(self)):
            row = (index + offset) % len(self)
            path = self.paths[row]
            try:
                image = load_square_image(path, self.image_size, self.resize)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"{path}: unreadable image skipped ({error})", RuntimeWarning, stacklevel=2)
                continue
            return {"image": image, "index": row, "key": self.keys[row]}
        raise InputError(f"{self.root}: none of the {len(self)} manifest images could be read")
