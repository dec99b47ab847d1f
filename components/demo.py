"""Interim main job: segment a few generated images with FS-DINO end to end (CPU, seconds).

Until the reproduction pipeline lands (``dvc repro``), this is what the README's first command runs. It
writes a support image + mask and query images, then calls ``fsdino segment`` on them with untrained
weights, so that every piece a user touches (image I/O, validation, the model, overlays) runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fsdino.cli import main as fsdino_main


def draw_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipse (the class) and a distractor square on a noisy background: (H×W×3, H×W)."""
    image = rng.integers(30, 90, size=(height, width, 3)).astype(np.uint8)
    ys, xs = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    ry, rx = rng.uniform(0.15, 0.25) * height, rng.uniform(0.15, 0.25) * width
    mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    stripes = ((xs + ys) // 4) % 2 == 0
    image[mask & stripes] = (230, 120, 40)
    image[mask & ~stripes] = (200, 90, 30)
    top, left = rng.integers(0, height // 4), rng.integers(0, width // 4)
    image[top : top + height // 6, left : left + width // 6] = (40, 160, 220)
    return image, mask.astype(np.uint8) * 255


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--queries", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    inputs = args.out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(args.queries + 1):
        image, mask = draw_scene(rng, 168, 224)
        Image.fromarray(image).save(inputs / f"scene{index}.png")
        Image.fromarray(mask, mode="L").save(inputs / f"scene{index}_mask.png")
        paths.append(inputs / f"scene{index}.png")
    support = ["--support", str(paths[0]), str(inputs / "scene0_mask.png")]
    queries = ["--query", *map(str, paths[1:])]
    return fsdino_main(["segment", *support, *queries, "--out", str(args.out / "masks"), "--image-size", "224"])


if __name__ == "__main__":
    sys.exit(main())
