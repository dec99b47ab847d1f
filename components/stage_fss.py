"""Stage FSS-1000: check the class folders and write the train / val / test split files.

Writes ``<out>/splits/{train,val,test}.txt`` (``<class>/<N> <class id>`` pairs), the class names of each
split in ``<out>/manifest.json``, and says whether HSNet's official lists or the seeded rule was used.

    python -m components.stage_fss --root data/raw/fss --out data/fss [--official-lists DIR]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from components.stage_pascal import stage_main
from fsdino.data import fss
from fsdino.data.benchmark import write_benchmark
from fsdino.data.imageio import image_size
from fsdino.errors import InputError
from fsdino.io.atomic import check_writable_dir


class FssStageConfig(BaseModel):
    """``root``: the folder holding ``FSS-1000/``; ``official_lists``: a folder with HSNet's ``trn.txt``,
    ``val.txt`` and ``test.txt``. When not given, ``<root>/splits/fss/`` is used if it holds the three
    files; otherwise the seeded rule of ``fsdino.data.fss`` (the demo's), unless ``require_official_lists``
    (the paper profile), which makes a missing list an error naming the file."""

    model_config = ConfigDict(extra="forbid")

    root: Path
    out: Path = Path("data/fss")
    official_lists: Path | None = None
    require_official_lists: bool = False
    seed: int = 0
    check_images: bool = True


def _check_sizes(source: fss.FSS1000) -> None:
    for index in range(len(source)):
        image_path = source.image_path(index)
        mask_path = image_path.with_suffix(".png")
        if image_size(image_path) != image_size(mask_path):
            raise InputError(f"{mask_path}: mask size differs from its image {image_path.name} (expected equal sizes)")


def official_lists(config: FssStageConfig) -> Path | None:
    """The folder of HSNet's class lists to use, or ``None`` for the seeded rule (refused when
    ``require_official_lists``: the error names the first missing list)."""
    candidate = config.official_lists or config.root / "splits" / "fss"
    missing = [candidate / name for name in fss.OFFICIAL_LIST_FILES.values() if not (candidate / name).is_file()]
    if missing and config.require_official_lists:
        raise InputError(
            f"{missing[0]}: HSNet's FSS-1000 class list not found (require_official_lists: no seeded split; "
            "copy trn.txt, val.txt and test.txt from HSNet's data/splits/fss/)"
        )
    if config.official_lists is not None:
        return config.official_lists
    return None if missing else candidate


def run(config: FssStageConfig) -> dict[str, Any]:
    check_writable_dir(config.out, what="out")
    source = fss.FSS1000(config.root)
    lists = official_lists(config)
    classes = fss.split_classes(source.class_names, lists, config.seed)
    if config.check_images:
        _check_sizes(source)
    splits = {name: fss.split_pairs(source, classes[name]) for name in fss.SPLIT_NAMES}
    options = {name: {"classes": classes[name]} for name in fss.SPLIT_NAMES}
    return write_benchmark(
        config.out,
        dataset="fss",
        root=config.root,
        splits=splits,
        source_options=options,
        split_rule=f"official lists ({lists})" if lists else f"seeded rule (seed {config.seed})",
        num_classes=len(source.class_names),
        num_images=len(source),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(FssStageConfig, run, argv, "stage_fss", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
