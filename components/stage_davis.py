"""Stage DAVIS-17 (val, 480p): check sequences, frames and palette annotations; write the query pairs.

Writes ``<out>/splits/val.txt`` (``<sequence>/<frame> <object>`` for every frame but the first) and
``<out>/manifest.json`` (frames and objects per sequence). Episodes take the first frame as support.

    python -m components.stage_davis --root data/raw/DAVIS --out data/davis
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from components.stage_pascal import stage_main
from fsdino.data import davis
from fsdino.data.benchmark import write_benchmark
from fsdino.data.imageio import check_label_header
from fsdino.errors import InputError
from fsdino.io.atomic import check_writable_dir


class DavisStageConfig(BaseModel):
    """``root``: the DAVIS folder (``JPEGImages/``, ``Annotations/``, ``ImageSets/``)."""

    model_config = ConfigDict(extra="forbid")

    root: Path
    out: Path = Path("data/davis")
    split: str = "val"
    resolution: str = "480p"
    check_images: bool = True


def run(config: DavisStageConfig) -> dict[str, Any]:
    check_writable_dir(config.out, what="out")
    source = davis.Davis17(config.root, config.split, config.resolution)
    for index in range(len(source)):
        if config.check_images or index == source.first_frame(source.sequence(index)):
            check_label_header(source.annotation_path(index), source.image_path(index))
    sequences = {}
    for sequence in source.sequences:
        objects = source.objects(sequence)
        if not objects:
            first = source.annotation_path(source.first_frame(sequence))
            raise InputError(f"{first}: no object in the first frame (expected indices 1, 2, … on background 0)")
        frames = sum(1 for index in range(len(source)) if source.sequence(index) == sequence)
        sequences[sequence] = {"frames": frames, "objects": list(objects)}
    split = config.split
    return write_benchmark(
        config.out,
        dataset="davis",
        root=config.root,
        splits={split: davis.query_pairs(source)},
        source_options={split: {"split": split, "resolution": config.resolution}},
        sequences=sequences,
        num_frames=len(source),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(DavisStageConfig, run, argv, "stage_davis", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
