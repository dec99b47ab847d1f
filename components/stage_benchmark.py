"""Pipeline step: stage the profile's few-shot benchmark (``benchmark.kind``: synthetic, pascal or coco)
into ``outputs/data/benchmark`` with the stager of that dataset.

    python -m components.stage_benchmark [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from components import stage_coco, stage_pascal, stage_synthetic
from components.cli import params_main
from components.config import Params
from fsdino.io.atomic import check_writable_dir

STAGERS = {"synthetic": stage_synthetic.run, "pascal": stage_pascal.run, "coco": stage_coco.run}


def run(params: Params, args: argparse.Namespace | None = None) -> dict[str, Any]:
    check_writable_dir(params.benchmark.out, what=f"benchmark.{params.benchmark.kind}.out")
    manifest = STAGERS[params.benchmark.kind](params.benchmark.stage)
    return {"kind": params.benchmark.kind, "out": str(params.benchmark.out), "splits": manifest.get("splits")}


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
