"""Stage the synthetic benchmark: generate it in the PASCAL-5i layout, then split it like PASCAL.

Writes ``<out>/VOC2012/…`` (the images and masks), ``<out>/splits/fold<f>_{train,val}.txt`` and
``<out>/manifest.json``; the same seed gives the same bytes.

    python -m components.stage_synthetic --out data/synthetic --num-images 400 --seed 0
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.stage_pascal import stage_main, write_pascal_benchmark
from fsdino.data.synthetic import SyntheticSpec, write_synthetic_pascal
from fsdino.data.synthetic_shapes import NUM_CLASSES, class_names
from fsdino.io.atomic import check_writable_dir


class SyntheticStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path = Path("data/synthetic")
    num_images: int = Field(default=400, ge=8)
    seed: int = 0
    min_size: int = Field(default=128, ge=32)
    max_size: int = Field(default=192, ge=32)
    objects: tuple[int, int] = (2, 4)
    ignore_border: int = Field(default=1, ge=0, le=4)
    val_fraction: float = Field(default=0.25, gt=0, lt=1)

    @model_validator(mode="after")
    def _ranges(self) -> SyntheticStageConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is larger than max_size {self.max_size}")
        if not 1 <= self.objects[0] <= self.objects[1] <= NUM_CLASSES:
            raise ValueError(f"objects: expected 1 <= min <= max <= {NUM_CLASSES}, got {list(self.objects)}")
        return self


def run(config: SyntheticStageConfig) -> dict[str, Any]:
    check_writable_dir(config.out, what="out")
    spec = SyntheticSpec(**config.model_dump(exclude={"out"}))
    write_synthetic_pascal(config.out, spec)
    return write_pascal_benchmark(
        config.out,
        config.out,
        folds=range(4),
        dataset="synthetic",
        class_names=class_names(),
        generator=config.model_dump(mode="json", exclude={"out"}),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(SyntheticStageConfig, run, argv, "stage_synthetic", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
