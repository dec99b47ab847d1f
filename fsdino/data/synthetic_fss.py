"""A synthetic cross-domain dataset in exactly the FSS-1000 layout, for the CPU demo's Table 3.

It writes ``<root>/FSS-1000/<class>/<N>.jpg`` with the mask ``<N>.png`` (grey, 0 background / 255
object) beside it, ``N`` = 1..``images_per_class``, so it is read by :class:`fsdino.data.fss.FSS1000`
and split by the same rule. As in FSS-1000, every image shows one large, roughly centred object on a
plain studio-like background (a light colour gradient, no clutter or distractors), all images are
square: a change of domain from the benchmark's cluttered multi-object scenes. Classes are the
synthetic benchmark's shape × texture families (``fsdino.data.synthetic_shapes``); the same seed gives
byte-identical files (image ``N`` of class ``c`` uses ``default_rng([seed, c, N])``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsdino.data.synthetic import encode_image, render_object
from fsdino.data.synthetic_shapes import NUM_CLASSES, class_names
from fsdino.io.atomic import atomic_folder

FOLDER = "FSS-1000"


@dataclass(frozen=True)
class SyntheticFssSpec:
    """What to generate: ``num_classes`` classes (≤ 20) of ``images_per_class`` square images of ``size`` px."""

    num_classes: int = NUM_CLASSES
    images_per_class: int = 10
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= NUM_CLASSES:
            raise ValueError(f"num_classes: expected 1-{NUM_CLASSES}, got {self.num_classes}")
        if self.images_per_class < 2 or self.size < 32:
            raise ValueError(f"inconsistent synthetic FSS spec: {self}")


def studio_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """size×size×3 float: a light, low-saturation linear gradient with faint noise."""
    start, end = rng.uniform(170, 250, size=3), rng.uniform(150, 240, size=3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    field = start + (end - start) * ramp
    return np.broadcast_to(field, (size, size, 3)) + rng.normal(0, 3, size=(size, size, 3))


def generate_fss_image(spec: SyntheticFssSpec, class_id: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``number`` (1-based) of class ``class_id``: (S×S×3 uint8 RGB, S×S uint8 mask {0, 255})."""
    rng = np.random.default_rng([spec.seed, class_id, number])
    size = spec.size
    image = studio_background(rng, size)
    radius = rng.uniform(0.3, 0.42) * size
    centre = (size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size)
    mask, pattern = render_object(rng, class_id, (size, size), centre, radius)
    image[mask] = pattern[mask]
    image = np.clip(image + rng.normal(0, 3, size=image.shape), 0, 255).astype(np.uint8)
    return image, np.where(mask, 255, 0).astype(np.uint8)


def write_synthetic_fss(root: Path | str, spec: SyntheticFssSpec | None = None) -> Path:
    """Generate the dataset into ``<root>/FSS-1000`` (replaced only once complete) and return that folder."""
    spec = spec or SyntheticFssSpec()
    target = Path(root) / FOLDER
    names = class_names()
    with atomic_folder(target) as staging:
        for class_id in range(1, spec.num_classes + 1):
            folder = staging / names[class_id - 1]
            folder.mkdir()
            for number in range(1, spec.images_per_class + 1):
                image, mask = generate_fss_image(spec, class_id, number)
                (folder / f"{number}.jpg").write_bytes(encode_image(image, "JPEG"))
                (folder / f"{number}.png").write_bytes(encode_image(mask, "PNG"))
    return target
