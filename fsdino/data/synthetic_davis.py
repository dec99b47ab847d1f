"""A synthetic cross-domain video dataset in exactly the DAVIS-2017 layout, for the CPU demo's Table 3.

It writes ``<root>/JPEGImages/480p/<sequence>/<frame>.jpg``, ``<root>/Annotations/480p/<sequence>/
<frame>.png`` (palette PNG: 0 background, object ``i`` = index ``i``) and ``<root>/ImageSets/2017/val.txt``,
so it is read by :class:`fsdino.data.davis.Davis17`. Each sequence shows 1-3 objects of different
synthetic classes (``fsdino.data.synthetic_shapes``) gliding over a fixed smooth background at constant
velocity, slowly growing or shrinking; a later object passes in front of an earlier one. Every object is
fully visible in the first frame (the one-shot support). Frames keep DAVIS's 16:9 aspect at a small
size. The same seed gives byte-identical files (sequence ``s`` uses ``default_rng([seed, s])``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fsdino.data.synthetic import background, encode_image, render_object
from fsdino.data.synthetic_shapes import NUM_CLASSES
from fsdino.io.atomic import atomic_folder

RESOLUTION = "480p"
PLACEMENT_TRIES = 100
#: DAVIS's palette for the first object indices (0 black, then the VOC colours); the rest stay black.
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128]


@dataclass(frozen=True)
class SyntheticDavisSpec:
    """What to generate: ``sequences`` videos of ``frames`` frames of ``height``×``width`` px, 1-3 objects each."""

    sequences: int = 6
    frames: int = 8
    height: int = 108
    width: int = 192
    max_objects: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.frames < 3 or not 1 <= self.max_objects <= 3 or min(self.height, self.width) < 32:
            raise ValueError(f"inconsistent synthetic DAVIS spec: {self} (a sequence needs at least 3 frames)")

    def sequence_name(self, index: int) -> str:
        return f"synth-{index:02d}"


@dataclass(frozen=True)
class _Track:
    class_id: int
    seed: int  # the object's shape pose and colours, the same in every frame
    start: tuple[float, float]
    velocity: tuple[float, float]
    radius: float
    growth: float  # radius factor per frame


def _tracks(rng: np.random.Generator, spec: SyntheticDavisSpec) -> list[_Track]:
    count = int(rng.integers(1, spec.max_objects + 1))
    classes = rng.choice(np.arange(1, NUM_CLASSES + 1), size=count, replace=False)
    short = min(spec.height, spec.width)
    tracks = []
    for class_id in classes:
        radius = rng.uniform(0.16, 0.26) * short
        start = (rng.uniform(radius, spec.height - radius), rng.uniform(radius, spec.width - radius))
        speed = rng.uniform(0.01, 0.03) * spec.width
        angle = rng.uniform(0, 2 * np.pi)
        tracks.append(
            _Track(
                int(class_id), int(rng.integers(2**31)), start, (speed * np.sin(angle), speed * np.cos(angle)),
                radius, float(rng.uniform(0.97, 1.03)),
            )
        )  # fmt: skip
    return tracks


def render_frame(
    spec: SyntheticDavisSpec, base: np.ndarray, tracks: list[_Track], frame: int, noise_seed: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``frame`` of a sequence: (H×W×3 uint8 RGB, H×W uint8 object indices)."""
    image = base.copy()
    labels = np.zeros((spec.height, spec.width), dtype=np.uint8)
    for index, track in enumerate(tracks, start=1):
        centre = (track.start[0] + frame * track.velocity[0], track.start[1] + frame * track.velocity[1])
        radius = track.radius * track.growth**frame
        mask, pattern = render_object(
            np.random.default_rng(track.seed), track.class_id, (spec.height, spec.width), centre, radius
        )
        image[mask] = pattern[mask]
        labels[mask] = index
    noise = np.random.default_rng(noise_seed).normal(0, 3, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), labels


def _first_frame_ok(spec: SyntheticDavisSpec, base: np.ndarray, tracks: list[_Track], seed: list[int]) -> bool:
    """Every object is wholly visible in the first frame (no occlusion there: it is the support)."""
    _, labels = render_frame(spec, base, tracks, 0, seed)
    for index, track in enumerate(tracks, start=1):
        mask, _ = render_object(
            np.random.default_rng(track.seed), track.class_id, (spec.height, spec.width), track.start, track.radius
        )
        if not mask.any() or (labels[mask] != index).any():
            return False
    return True


def palette_png(labels: np.ndarray) -> bytes:
    image = Image.fromarray(labels, mode="P")
    image.putpalette(PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_synthetic_davis(root: Path | str, spec: SyntheticDavisSpec | None = None) -> Path:
    """Generate the dataset into ``root`` (``JPEGImages``, ``Annotations``, ``ImageSets``; the folder is
    replaced only once complete) and return it."""
    spec = spec or SyntheticDavisSpec()
    root = Path(root)
    with atomic_folder(root) as staging:
        names = []
        for sequence in range(spec.sequences):
            rng = np.random.default_rng([spec.seed, sequence])
            base = background(rng, spec.height, spec.width)
            tracks = _tracks(rng, spec)
            for _ in range(PLACEMENT_TRIES):
                if _first_frame_ok(spec, base, tracks, [spec.seed, sequence, 0]):
                    break
                tracks = _tracks(rng, spec)
            else:
                raise ValueError(f"{spec}: no placement of the objects without overlap in the first frame")
            name = spec.sequence_name(sequence)
            names.append(name)
            frames_dir = staging / "JPEGImages" / RESOLUTION / name
            labels_dir = staging / "Annotations" / RESOLUTION / name
            frames_dir.mkdir(parents=True)
            labels_dir.mkdir(parents=True)
            for frame in range(spec.frames):
                image, labels = render_frame(spec, base, tracks, frame, [spec.seed, sequence, frame])
                (frames_dir / f"{frame:05d}.jpg").write_bytes(encode_image(image, "JPEG"))
                (labels_dir / f"{frame:05d}.png").write_bytes(palette_png(labels))
        (staging / "ImageSets" / "2017").mkdir(parents=True)
        (staging / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{name}\n" for name in names))
    return root
