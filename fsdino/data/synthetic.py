"""The synthetic few-shot benchmark: a deterministic dataset in exactly the PASCAL-5i layout.

It writes ``<out>/VOC2012/JPEGImages/<name>.jpg``, ``<out>/VOC2012/SegmentationClassAug/<name>.png``
(one byte a pixel: 0 background, 1-20 classes, 255 ignore) and ``VOC2012/ImageSets/Segmentation/
{train,val}.txt``, so it is read by :class:`fsdino.data.pascal.PascalVOC` and split into the same 4
folds of 5 classes. Each image (128-192 px a side by default) shows 2-4 objects of different classes
(``fsdino.data.synthetic_shapes``: a class is a shape family × texture family with a typical hue,
colours varying per object) on a smooth cluttered background with untextured distractor blobs;
objects may overlap but each keeps at least half of its area visible. Background pixels within
``ignore_border`` px of an object are 255, like VOC's boundary band. The same seed gives
byte-identical files (image i uses ``default_rng([seed, i])``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fsdino.data.base import IGNORE
from fsdino.data.synthetic_shapes import NUM_CLASSES, class_family, shape_mask, texture
from fsdino.io.atomic import atomic_folder

MIN_VISIBLE_FRACTION = 0.5
PLACEMENT_TRIES = 20
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Args:
        num_images: images in total; the last ``val_fraction`` of them form ``val.txt``.
        seed: same seed → same bytes.
        min_size, max_size: range of each image side in pixels.
        objects: (min, max) objects per image, each of a different class.
        ignore_border: width in px of the 255 band around objects (0: none).
        val_fraction: share of images in the val (test) list.
    """

    num_images: int = 400
    seed: int = 0
    min_size: int = 128
    max_size: int = 192
    objects: tuple[int, int] = (2, 4)
    ignore_border: int = 1
    val_fraction: float = 0.25

    def image_name(self, index: int) -> str:
        return f"synth_{index:06d}"


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour field (a 3×3 random grid upsampled) with faint pixel noise, H×W×3 float."""
    grid = rng.integers(40, 220, size=(3, 3, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)
    return field + rng.normal(0, 6, size=field.shape)


def _paint_distractors(rng: np.random.Generator, image: np.ndarray) -> None:
    """0-2 untextured ellipses: object-like outlines that belong to the background."""
    height, width = image.shape[:2]
    y, x = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(0, 3))):
        centre_y, centre_x = rng.uniform(0, height), rng.uniform(0, width)
        radius_y, radius_x = rng.uniform(0.06, 0.18) * height, rng.uniform(0.06, 0.18) * width
        inside = ((y - centre_y) / radius_y) ** 2 + ((x - centre_x) / radius_x) ** 2 <= 1
        image[inside] = rng.integers(30, 230, size=3)


def _object(rng: np.random.Generator, class_id: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H×W bool mask, H×W×3 texture) of one object of ``class_id`` at a random place and size."""
    radius = rng.uniform(0.18, 0.3) * min(height, width)
    centre_y = rng.uniform(radius * 0.8, height - radius * 0.8)
    centre_x = rng.uniform(radius * 0.8, width - radius * 0.8)
    return render_object(rng, class_id, (height, width), (centre_y, centre_x), radius)


def render_object(
    rng: np.random.Generator, class_id: int, size: tuple[int, int], centre: tuple[float, float], radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """(H×W bool mask, H×W×3 uint8 texture) of one object of ``class_id`` centred at ``centre`` (y, x).

    The shape's pose and the texture's colours are drawn from ``rng``: a generator seeded the same way
    gives the same object, so a video's frames can move one object by changing only ``centre``.
    """
    shape, pattern = class_family(class_id)
    y, x = np.mgrid[: size[0], : size[1]].astype(np.float64)
    y, x = y - centre[0], x - centre[1]
    return shape_mask(shape, y / radius, x / radius, rng), texture(pattern, y, x, rng, class_id)


def _near(mask: np.ndarray, distance: int) -> np.ndarray:
    """Pixels within Chebyshev ``distance`` of a True pixel of ``mask`` (binary dilation)."""
    grown = mask.copy()
    height, width = mask.shape
    for shift_y in range(-distance, distance + 1):
        for shift_x in range(-distance, distance + 1):
            source = mask[max(shift_y, 0) : height + min(shift_y, 0), max(shift_x, 0) : width + min(shift_x, 0)]
            grown[max(-shift_y, 0) : height + min(-shift_y, 0), max(-shift_x, 0) : width + min(-shift_x, 0)] |= source
    return grown


def generate_image(spec: SyntheticSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index``: (H×W×3 uint8 RGB, H×W uint8 labels 0-20 and 255)."""
    rng = np.random.default_rng([spec.seed, index])
    height, width = (int(side) for side in rng.integers(spec.min_size, spec.max_size + 1, size=2))
    image = background(rng, height, width)
    _paint_distractors(rng, image)
    labels = np.zeros((height, width), dtype=np.uint8)
    count = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
    areas: dict[int, int] = {}
    for class_id in rng.choice(np.arange(1, NUM_CLASSES + 1), size=count, replace=False):
        for _ in range(PLACEMENT_TRIES):
            mask, pattern = _object(rng, int(class_id), height, width)
            covered = labels[mask]
            if mask.sum() and all(
                (labels == earlier).sum() - (covered == earlier).sum() >= MIN_VISIBLE_FRACTION * area
                for earlier, area in areas.items()
            ):
                image[mask] = pattern[mask]
                labels[mask] = class_id
                areas[int(class_id)] = int(mask.sum())
                break
    image = np.clip(image + rng.normal(0, 4, size=image.shape), 0, 255).astype(np.uint8)
    if spec.ignore_border:
        objects = labels > 0
        labels[_near(objects, spec.ignore_border) & ~objects] = IGNORE
    return image, labels


def encode_image(array: np.ndarray, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "JPEG":
        Image.fromarray(array).save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _write_voc(voc: Path, spec: SyntheticSpec) -> None:
    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for index in range(spec.num_images):
        image, labels = generate_image(spec, index)
        name = spec.image_name(index)
        (voc / "JPEGImages" / f"{name}.jpg").write_bytes(encode_image(image, "JPEG"))
        (voc / "SegmentationClassAug" / f"{name}.png").write_bytes(encode_image(labels, "PNG"))
    num_val = round(spec.num_images * spec.val_fraction)
    names = [spec.image_name(index) for index in range(spec.num_images)]
    split_at = len(names) - num_val
    (voc / "ImageSets/Segmentation/train.txt").write_text("".join(f"{n}\n" for n in names[:split_at]))
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{n}\n" for n in names[split_at:]))


def write_synthetic_pascal(out_dir: Path | str, spec: SyntheticSpec | None = None) -> Path:
    """Generate the dataset into ``<out_dir>/VOC2012`` and return that folder.

    The files are written to a temporary sibling folder that replaces ``VOC2012`` only once complete
    (:func:`~fsdino.io.atomic.atomic_folder`), so a failure never leaves a half-written dataset behind.
    """
    spec = spec or SyntheticSpec()
    if not 1 <= spec.objects[0] <= spec.objects[1] <= NUM_CLASSES or not 16 <= spec.min_size <= spec.max_size:
        raise ValueError(f"inconsistent synthetic spec: {spec}")
    target = Path(out_dir) / "VOC2012"
    with atomic_folder(target) as staging:
        _write_voc(staging, spec)
    return target
