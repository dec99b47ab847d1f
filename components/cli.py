"""The command-line shape shared by the pipeline steps that read the whole ``params.yaml``.

``python -m components.<step> [--params params.yaml] [step options]``: the step's summary is printed as
one JSON line on stdout; bad input ends with ``error: <one line>`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.config import Params, load_params
from fsdino.errors import InputError

EXIT_INPUT_ERROR = 2


def params_main(
    run: Callable[[Params, argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        summary = run(load_params(args.params), args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(json.dumps(summary, default=str))
    return 0


def fingerprint(*parts: Any) -> str:
    """A stable digest of configuration values (pydantic models, dicts, strings)."""
    import hashlib

    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if hasattr(value, "model_dump") else value

    text = json.dumps([plain(part) for part in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_work_dir(path: Path, run_fingerprint: str) -> Path:
    """A folder for resumable training state, emptied when it belongs to another configuration."""
    import shutil

    marker = path / "fingerprint.txt"
    if path.exists() and (not marker.is_file() or marker.read_text().strip() != run_fingerprint):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_fingerprint + "\n")
    return path


def copy_atomic(source: Path, destination: Path) -> None:
    import shutil

    from fsdino.io.atomic import atomic_path

    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)
