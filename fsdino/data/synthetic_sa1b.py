"""Tiny, deterministic SA-1B look-alike: tars of ``./sa_<id>.jpg`` + ``./sa_<id>.json`` pairs.

The real release (``sa_000000.tar`` … ``sa_000999.tar``) holds ≈11k images a tar with their short side at
1,500 px. This generator writes the same layout and per-image JSON schema with small images (160-256 px
a side) of textured backgrounds and a few filled shapes, one COCO-RLE mask per shape, so that staging,
manifests and datasets can be tested without the 11 TB download. The same ``seed`` gives identical bytes:
every tar header has a fixed mtime, owner and mode.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

#: Fixed tar header fields, so that the output depends on the seed only.
TAR_MTIME = 1_680_000_000
TAR_MODE = 0o644
LINKS_HEADER = ("file_name", "cdn_link")


@dataclass(frozen=True)
class SyntheticSA1B:
    """What :func:`write_synthetic_sa1b` wrote."""

    tar_paths: list[Path]
    links_path: Path
    image_ids: dict[str, list[int]]  # tar file name → image ids in member order


def tar_name(index: int) -> str:
    """``3`` → ``"sa_000003.tar"`` (the release's naming)."""
    return f"sa_{index:06d}.tar"


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random background: H×W×3 uint8 (a colour gradient plus low-amplitude noise)."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    corner_colours = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
    image = (
        corner_colours[0] + (corner_colours[1] - corner_colours[0]) * ys + (corner_colours[2] - corner_colours[0]) * xs
    )
    image = image + rng.normal(0.0, 8.0, size=(height, width, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One filled ellipse or rectangle: H×W bool, never empty."""
    centre_y, centre_x = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    radius_y, radius_x = rng.uniform(0.08, 0.3) * height, rng.uniform(0.08, 0.3) * width
    ys, xs = np.mgrid[0:height, 0:width]
    if rng.random() < 0.5:
        mask = ((ys - centre_y) / radius_y) ** 2 + ((xs - centre_x) / radius_x) ** 2 <= 1.0
    else:
        mask = (np.abs(ys - centre_y) <= radius_y) & (np.abs(xs - centre_x) <= radius_x)
    mask[int(centre_y), int(centre_x)] = True
    return mask


def _annotation(rng: np.random.Generator, mask: np.ndarray, annotation_id: int) -> dict:
    """One SA-1B annotation for an H×W bool mask (COCO RLE, XYWH box, scores, prompt point)."""
    height, width = mask.shape
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    pick = int(rng.integers(len(ys)))
    return {
        "id": annotation_id,
        "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
        "bbox": [float(value) for value in mask_utils.toBbox(rle)],
        "area": int(mask_utils.area(rle)),
        "predicted_iou": round(float(rng.uniform(0.85, 1.0)), 6),
        "stability_score": round(float(rng.uniform(0.9, 1.0)), 6),
        "crop_box": [0.0, 0.0, float(width), float(height)],
        "point_coords": [[float(xs[pick]) + 0.5, float(ys[pick]) + 0.5]],
    }


def synthetic_image(
    rng: np.random.Generator, image_id: int, size_range: tuple[int, int], masks_per_image: int
) -> tuple[bytes, dict]:
    """One image as (JPEG bytes, SA-1B JSON record); H and W are drawn from ``size_range`` (inclusive)."""
    height, width = (int(value) for value in rng.integers(size_range[0], size_range[1] + 1, size=2))
    pixels = _texture(rng, height, width)
    annotations = []
    for shape_index in range(masks_per_image):
        mask = _shape_mask(rng, height, width)
        pixels[mask] = rng.integers(0, 256, size=3, dtype=np.uint8)
        annotations.append(_annotation(rng, mask, image_id * 1000 + shape_index))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    record = {
        "image": {"image_id": image_id, "width": width, "height": height, "file_name": f"sa_{image_id}.jpg"},
        "annotations": annotations,
    }
    return buffer.getvalue(), record


def add_tar_member(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    """Append a regular-file member with the fixed header fields."""
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(payload))


def write_links_file(path: Path, names: list[str], base_url: str) -> Path:
    """Write the release's links TSV (header ``file_name<TAB>cdn_link``), one URL ``base_url + name`` a row."""
    rows = ["\t".join(LINKS_HEADER)] + [f"{name}\t{base_url.rstrip('/')}/{name}" for name in names]
    path.write_text("\n".join(rows) + "\n")
    return path


def write_synthetic_sa1b(
    out_dir: Path | str,
    *,
    num_tars: int = 3,
    images_per_tar: int = 4,
    seed: int = 0,
    size_range: tuple[int, int] = (160, 256),
    masks_per_image: int = 3,
    base_url: str = "https://example.invalid/sa1b",
    links_name: str = "sa1b_links.tsv",
) -> SyntheticSA1B:
    """Write ``num_tars`` tars of ``images_per_tar`` images each, plus the links file, into ``out_dir``.

    Image ids are 1, 2, 3, … across tars in order; tar ``t`` is ``sa_{t:06d}.tar``. Each tar's images come
    from their own generator seeded by ``(seed, t)``, so adding tars leaves the earlier ones unchanged.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_paths: list[Path] = []
    image_ids: dict[str, list[int]] = {}
    for tar_index in range(num_tars):
        rng = np.random.default_rng([seed, tar_index])
        name = tar_name(tar_index)
        ids = [1 + tar_index * images_per_tar + offset for offset in range(images_per_tar)]
        path = out_dir / name
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
            for image_id in ids:
                jpeg, record = synthetic_image(rng, image_id, size_range, masks_per_image)
                add_tar_member(archive, f"./sa_{image_id}.jpg", jpeg)
                add_tar_member(archive, f"./sa_{image_id}.json", json.dumps(record).encode())
        tar_paths.append(path)
        image_ids[name] = ids
    links_path = write_links_file(out_dir / links_name, [path.name for path in tar_paths], base_url)
    return SyntheticSA1B(tar_paths=tar_paths, links_path=links_path, image_ids=image_ids)
