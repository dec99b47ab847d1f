"""Pipeline step: stage one cross-domain target of Table 3 (``crossdomain.<target>``) into ``<data_dir>/<target>``.

    python -m components.stage_crossdomain --target fss|davis [--params params.yaml]

With ``synthetic`` set, the dataset is first generated in its official layout under ``<that folder>/raw``
(``fsdino.data.synthetic_fss`` / ``synthetic_davis``); then the dataset's own stager checks it and
writes the split files and ``manifest.json`` (``components.stage_fss`` / ``stage_davis``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components import stage_davis, stage_fss
from components.cli import params_main
from components.config import Params
from components.crossdomain_config import DavisTargetParams, FssTargetParams


def _generate(target: FssTargetParams | DavisTargetParams, out: Path) -> None:
    if target.synthetic is None:
        return
    if isinstance(target, FssTargetParams):
        from fsdino.data.synthetic_fss import SyntheticFssSpec, write_synthetic_fss

        write_synthetic_fss(target.raw_root(out), SyntheticFssSpec(**target.synthetic.model_dump()))
    else:
        from fsdino.data.synthetic_davis import SyntheticDavisSpec, write_synthetic_davis

        write_synthetic_davis(target.raw_root(out), SyntheticDavisSpec(**target.synthetic.model_dump()))


def run(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    name = args.target
    params.crossdomain.require(name)
    target, out = params.crossdomain.target(name), params.crossdomain.stage_dir(name)
    _generate(target, out)
    config = target.stage_config(out)
    manifest = stage_fss.run(config) if name == "fss" else stage_davis.run(config)
    splits = {split: entry["pairs"] for split, entry in manifest["splits"].items()}
    return {"target": name, "out": str(out), "synthetic": target.synthetic is not None, "pairs": splits}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, choices=["fss", "davis"])


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0], _arguments, lambda args: f"crossdomain_data@{args.target}")


if __name__ == "__main__":
    sys.exit(main())
