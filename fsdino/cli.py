"""The ``fsdino`` command: ``segment`` images from a few examples, ``score`` predictions with the standard
protocol, ``info`` about a model variant.

Bad input ends with one line on stderr (``fsdino: error: …``), exit code 2, and nothing written. So does an
``--out`` that cannot be written (checked before any work) or a disk that fills up while writing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from fsdino.config import EncoderConfig, EncoderName, ModelConfig, Variant
from fsdino.errors import InputError, report_error


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=get_args(Variant), default="full")
    parser.add_argument("--encoder", choices=get_args(EncoderName), default="vit_small_patch14_dinov2")
    parser.add_argument("--image-size", type=int, default=224, help="square input size, a multiple of 14")
    parser.add_argument(
        "--encoder-weights", default="random", help="'random', 'hub' (timm/Hugging Face) or a DINOv2 .pth path"
    )


def _config_from_args(args: argparse.Namespace) -> ModelConfig:
    try:
        return ModelConfig(
            variant=args.variant,
            encoder=EncoderConfig(name=args.encoder, weights=args.encoder_weights),
            image_size=args.image_size,
        )
    except ValidationError as error:
        detail = error.errors()[0]
        field = "--" + str(detail["loc"][-1]).replace("_", "-")
        raise InputError(f"{field}: {detail['msg']}") from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsdino", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment query images from K labelled support images")
    segment.add_argument(
        "--support", nargs=2, action="append", metavar=("IMG", "MASK"), required=True, help="repeat for K shots"
    )
    segment.add_argument("--query", nargs="+", required=True, metavar="IMG")
    segment.add_argument("--checkpoint", type=Path, help="FS-DINO checkpoint; without it the weights are untrained")
    segment.add_argument("--out", type=Path, required=True, help="output folder for masks and overlays")
    segment.add_argument("--threshold", type=float, default=0.5)
    segment.add_argument("--batch-size", type=int, default=4)
    segment.add_argument("--device", default="cpu")
    _model_options(segment)

    score = commands.add_parser("score", help="score predicted masks against ground truth (mIoU, FB-IoU)")
    score.add_argument("--pred", type=Path, required=True, help="<image>__<class>.png binary masks")
    score.add_argument("--gt", type=Path, required=True, help="<image>.png label masks (class ids, 255 ignore)")
    score.add_argument("--classes", type=Path, required=True, help="'<image> <class>' lines (a split file)")
    score.add_argument("--out", type=Path, help="folder for metrics.json and per_pair.csv")

    info = commands.add_parser("info", help="parameter counts and feature shapes of a model, as JSON")
    _model_options(info)
    info.add_argument("--shots", type=int, default=1)
    return parser


def _output_paths(queries: Sequence[Path], out: Path) -> list[tuple[Path, Path]]:
    stems: dict[str, Path] = {}
    for query in queries:
        if query.stem in stems:
            raise InputError(f"{query}: same file name as {stems[query.stem]}; outputs would overwrite each other")
        stems[query.stem] = query
    return [(out / f"{q.stem}_mask.png", out / f"{q.stem}_overlay.png") for q in queries]


def run_segment(args: argparse.Namespace) -> int:
    from fsdino.inference import Segmenter
    from fsdino.io.atomic import check_writable_dir, write_files_atomic
    from fsdino.io.images import mask_png, read_image, read_support_mask, rgb_png
    from fsdino.viz import overlay_mask

    # Check the output folder and every input before anything is computed or written.
    check_writable_dir(args.out, what="--out")
    support_images, support_masks = [], []
    for image_path, mask_path in args.support:
        image = read_image(image_path)
        support_images.append(image)
        support_masks.append(read_support_mask(mask_path, image.shape[:2]))
    query_paths = [Path(q) for q in args.query]
    queries = [read_image(path) for path in query_paths]
    outputs = _output_paths(query_paths, args.out)

    if args.checkpoint is None:
        print("fsdino: warning: no --checkpoint given: segmenting with UNTRAINED weights", file=sys.stderr)
        segmenter = Segmenter.untrained(_config_from_args(args), device=args.device, batch_size=args.batch_size)
    else:
        segmenter = Segmenter.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size)
    segmenter.set_support(support_images, support_masks)
    masks = segmenter.segment(queries, threshold=args.threshold)

    for image, mask, (mask_path, overlay_path) in zip(queries, masks, outputs, strict=True):
        # A query's mask and overlay appear together or not at all (a full disk leaves neither).
        write_files_atomic({mask_path: mask_png(mask), overlay_path: rgb_png(overlay_mask(image, mask))})
        print(f"{mask_path}\t{overlay_path}\tforeground={mask.mean():.3f}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from fsdino.models.build import build_fsdino
    from fsdino.models.summary import feature_shapes, parameter_counts

    config = _config_from_args(args)
    if args.shots < 1:
        raise InputError(f"--shots: expected at least 1, got {args.shots}")
    model = build_fsdino(config)
    report = {
        "config": config.model_dump(mode="json"),
        "parameters": parameter_counts(model),
        "shapes": feature_shapes(model, config.image_size, args.shots),
    }
    print(json.dumps(report, indent=2))
    return 0


def run_score(args: argparse.Namespace) -> int:
    import pandas as pd

    from fsdino.evaluation.scoring import score_folder
    from fsdino.io.atomic import check_writable_dir, json_text, write_files_atomic

    if args.out is not None:
        check_writable_dir(args.out, what="--out")
    meter, rows = score_folder(args.pred, args.gt, args.classes)
    report = {**meter.summary(), "class_iou": {str(k): v for k, v in meter.class_iou().items()}}
    if args.out is not None:
        write_files_atomic({
            args.out / "metrics.json": json_text(report).encode(),
            args.out / "per_pair.csv": pd.DataFrame(rows).to_csv(index=False).encode(),
        })  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"segment": run_segment, "info": run_info, "score": run_score}
    try:
        return handlers[args.command](args)
    except Exception as error:
        return report_error(error, prefix="fsdino: error")


if __name__ == "__main__":
    sys.exit(main())
