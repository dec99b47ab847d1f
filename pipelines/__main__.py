"""Run the ``reproduce`` flow, or list the DAG it would run.

    python -m pipelines                                  # every stage of dvc.yaml, as `dvc repro` would
    python -m pipelines --gpus 0 1 --stages "train@*-2-*" "evaluate@*-2-*"
    python -m pipelines --list [--stages report]         # the steps and their upstream; runs nothing

Without ``PREFECT_API_URL`` the flow starts a temporary local Prefect server for the run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.dag import load_steps, select


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the DVC project (repository root)")
    parser.add_argument("--params", default="params.yaml", help="parameters file, relative to --root")
    parser.add_argument("--stages", nargs="+", help="stage names, groups or globs (with their upstream)")
    parser.add_argument("--max-parallel", type=int, default=1, help="step commands at once (without --gpus)")
    parser.add_argument("--gpus", nargs="+", help="GPU ids; one running step per GPU")
    parser.add_argument(
        "--gpus-per-step", nargs="+", default=[], metavar="STAGE=N", type=_gpus_of,
        help="run the steps a name, group or glob selects on N GPUs under torchrun (e.g. 'distill_*=4')",
    )  # fmt: skip
    parser.add_argument("--no-commit", dest="commit", action="store_false", help="leave dvc.lock alone")
    parser.add_argument("--force", action="store_true", help="run steps even when DVC finds them up to date")
    parser.add_argument("--pull", action="store_true", help="fetch the remote's run-cache first; restore from it")
    parser.add_argument("--push", action="store_true", help="push each stage (outputs + run-cache) once it ran")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--retry-delay", type=float, default=60.0, help="seconds between retries")
    parser.add_argument("--list", action="store_true", help="print the steps in order and exit")
    return parser


def _gpus_of(text: str) -> tuple[str, int]:
    target, _, count = text.rpartition("=")
    if not target or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STAGE=N with N a positive number of GPUs")
    return target, int(count)


def list_steps(root: str, stages: Sequence[str] | None) -> None:
    """Print each step with the steps it waits for."""
    steps = load_steps(root)
    for step in select(steps, stages) if stages else steps:
        upstream = ", ".join(sorted(step.upstream)) or "-"
        print(f"{step.name:<24} <- {upstream}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.list:
            list_steps(args.root, args.stages)
            return 0
        from pipelines.reproduce import reproduce

        done = reproduce(
            root=args.root, params=args.params, stages=args.stages, max_parallel=args.max_parallel, gpus=args.gpus,
            gpus_per_step=dict(args.gpus_per_step) or None, commit=args.commit, force=args.force, pull=args.pull,
            push=args.push, retries=args.retries,
            retry_delay_seconds=args.retry_delay,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, action in done.items():
        print(f"{name:<24} {action}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
