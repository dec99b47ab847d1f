"""The one command: ``python -m benchmarks.run [--suite ...] [--size ...] [--device auto] [--out DIR]``.

Runs the chosen suites on the device it finds and writes, per suite, ``<out>/<device>-<date>-<suite>.json``
(schema in :mod:`benchmarks.results`) and the same stem with ``.md`` (a markdown table), then prints the
markdown. ``--size auto`` is ``paper`` on a GPU and ``cpu`` otherwise. ``--budget-s T`` ends the run on its
own within about ``T`` seconds (:mod:`benchmarks.budget`); each suite's files are written as it finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch

from benchmarks import caching, distill, dvc_repro, encoder, inference, scale, tracking, train_step
from benchmarks.budget import Budget
from benchmarks.common import bench_runtime, resolve_device
from benchmarks.report import markdown
from benchmarks.results import SuiteResult, document, environment, output_stem, write_document
from benchmarks.sizes import SIZES
from fsdino.io.atomic import write_text_atomic

SuiteFn = Callable[..., SuiteResult]  # (size, device, *, budget) -> SuiteResult
DEFAULT_SUITES = ("inference", "caching", "distill", "train", "encoder")
ALL_SUITES = (*DEFAULT_SUITES, "dvc", "scale", "tracking")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite", default=",".join(DEFAULT_SUITES), help=f"comma-separated, of {', '.join(ALL_SUITES)}"
    )
    parser.add_argument("--size", default="auto", choices=["auto", *SIZES], help="benchmark size (benchmarks/sizes.py)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where the JSON/markdown go")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="try torch.compile in the train suite"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 peak, if not in the table")
    parser.add_argument("--dvc-timeout", type=float, default=3600.0, help="seconds allowed for one `dvc repro`")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="end within about this many seconds, skipping unstarted cases"
    )
    args = parser.parse_args(argv)
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0 seconds, got {args.budget_s:g}")
    args.suites = [name.strip() for name in args.suite.split(",") if name.strip()]
    unknown = sorted(set(args.suites) - set(ALL_SUITES))
    if unknown or not args.suites:
        parser.error(f"unknown suite(s) {unknown}; choose from {', '.join(ALL_SUITES)}")
    return args


def suites(args: argparse.Namespace) -> dict[str, SuiteFn]:
    return {
        "inference": inference.run,
        "caching": caching.run,
        "distill": distill.run,
        "train": train_step.run,
        "encoder": partial(encoder.run, peak_tflops=args.peak_tflops),
        "dvc": partial(dvc_repro.run, timeout_s=args.dvc_timeout),
        "scale": scale.run,
        "tracking": tracking.run,
    }


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Run the suites; returns the JSON files written."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    size = SIZES[args.size if args.size != "auto" else ("paper" if device.type == "cuda" else "cpu")]
    if args.compile is not None:
        size = dataclasses.replace(size, try_compile=args.compile)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    written: list[Path] = []
    budget = Budget(args.budget_s)
    try:
        runners = suites(args)
        for index, name in enumerate(args.suites):
            share = budget.share(name, args.suites[index + 1 :])
            result = runners[name](size, device, budget=share)
            settings = {"size": size.to_dict(), **result.settings}
            if args.budget_s is not None:
                settings["budget"] = share.to_dict()
            doc = document(
                suite=name,
                size=size.name,
                environment=environment(device, bench_runtime(device).amp_dtype),
                settings=settings,
                records=result.records,
                summary=result.summary,
            )
            stem = output_stem(args.out, device, name)
            written.append(write_document(doc, stem))
            text = markdown(doc)
            write_text_atomic(stem.with_suffix(".md"), text)
            print(text, flush=True)
    finally:
        torch.set_num_threads(threads)
    return written


if __name__ == "__main__":
    main()
