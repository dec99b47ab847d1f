"""Shape and texture families of the synthetic benchmark (``fsdino.data.synthetic``).

A class is one (shape family, texture family) combination: 5 shapes × 4 textures = 20 classes, so no
single cue (outline or pattern) names a class, and every fold mixes shapes and textures. Each class
also has a typical hue (as sky, grass or skin have in real data): an object's hue is drawn around its
class's hue with a spread (σ = 0.05 of the hue circle) that makes classes with neighbouring hues
overlap, so colour hints at a class but does not name it; saturation and brightness are free. A fold's
five classes get far-apart hues (``class_hue``). Masks are boolean arrays and objects are painted
through them, so image boundaries and label boundaries are the same pixels.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

SHAPES = ("blob", "triangle", "star", "ring", "cross")
TEXTURES = ("stripes", "checker", "dots", "waves")
NUM_CLASSES = len(SHAPES) * len(TEXTURES)


def class_family(class_id: int) -> tuple[str, str]:
    """1-based class id → (shape, texture); class k = 5t + s (0-based) has shape s and texture (t + s) % 4."""
    if not 1 <= class_id <= NUM_CLASSES:
        raise ValueError(f"class id must be 1-{NUM_CLASSES}, got {class_id}")
    index = class_id - 1
    shape = index % len(SHAPES)
    texture = (index // len(SHAPES) + shape) % len(TEXTURES)
    return SHAPES[shape], TEXTURES[texture]


def class_names() -> tuple[str, ...]:
    return tuple("_".join(reversed(class_family(class_id))) for class_id in range(1, NUM_CLASSES + 1))


def shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of ``shape`` at offsets (dy, dx) from its centre, in units of its radius (h×w each)."""
    angle = rng.uniform(0, 2 * math.pi)
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    v = v / rng.uniform(0.7, 1.0)  # aspect: squash one axis
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    if shape == "blob":
        lobes, wobble = int(rng.integers(2, 4)), rng.uniform(0.05, 0.15)
        return rho <= 1 - wobble + wobble * np.sin(lobes * phi + rng.uniform(0, 2 * math.pi))
    if shape == "triangle":
        sector = 2 * math.pi / 3
        return rho * np.cos(np.mod(phi, sector) - sector / 2) <= math.cos(sector / 2)
    if shape == "star":
        points, inner = int(rng.integers(5, 8)), rng.uniform(0.4, 0.55)
        position = np.mod(phi, 2 * math.pi / points) / (2 * math.pi / points)
        return rho <= inner + (1 - inner) * np.abs(2 * position - 1)
    if shape == "ring":
        return (rho <= 1) & (rho >= rng.uniform(0.45, 0.65))
    if shape == "cross":
        half = rng.uniform(0.22, 0.36)
        return ((np.abs(u) <= half) & (np.abs(v) <= 1)) | ((np.abs(v) <= half) & (np.abs(u) <= 1))
    raise ValueError(f"unknown shape {shape!r}")


HUE_SPREAD = 0.05


def class_hue(class_id: int) -> float:
    """Typical hue of a class in [0, 1): classes 1..20 visit the hue circle in steps of 7/20, so that
    the five classes of a fold (consecutive ids) get far-apart hues and classes of other folds fill the
    gaps."""
    return ((class_id - 1) * 7 % NUM_CLASSES) / NUM_CLASSES


def object_colours(rng: np.random.Generator, class_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB uint8 colours: one of a hue near the class's and a darker one of a nearby hue."""
    hue = (class_hue(class_id) + rng.normal(0.0, HUE_SPREAD)) % 1
    saturation, value = rng.uniform(0.4, 1.0), rng.uniform(0.55, 1.0)
    first = colorsys.hsv_to_rgb(hue, saturation, value)
    second = colorsys.hsv_to_rgb((hue + rng.uniform(-0.2, 0.2)) % 1, saturation, value * rng.uniform(0.2, 0.5))
    return (np.array(first) * 255).astype(np.uint8), (np.array(second) * 255).astype(np.uint8)


def texture(name: str, y: np.ndarray, x: np.ndarray, rng: np.random.Generator, class_id: int) -> np.ndarray:
    """h×w×3 uint8 pattern of family ``name`` in ``class_id``'s colours at pixel coordinates (y, x)
    relative to the object centre."""
    first, second = object_colours(rng, class_id)
    angle = rng.uniform(0, math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    across = -x * math.sin(angle) + y * math.cos(angle)
    if name == "stripes":
        pattern = np.sin(2 * math.pi * along / rng.uniform(4, 8)) >= 0
    elif name == "checker":
        cell = rng.uniform(3, 6)
        pattern = (np.floor(along / cell) + np.floor(across / cell)) % 2 == 0
    elif name == "dots":
        period = rng.uniform(5, 8)
        offset_a = np.mod(along, period) - period / 2
        offset_b = np.mod(across, period) - period / 2
        pattern = np.hypot(offset_a, offset_b) > 0.32 * period
    elif name == "waves":
        pattern = np.sin(2 * math.pi * np.hypot(x, y) / rng.uniform(4, 7)) >= 0
    else:
        raise ValueError(f"unknown texture {name!r}")
    return np.where(pattern[..., None], first, second)
