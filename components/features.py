"""Pipeline step: the frozen encoder's features of every benchmark image, computed once (``features.memo``).

    python -m components.features [--params params.yaml]

DINOv2 never trains, so train and evaluate can look its outputs up instead of recomputing them
(``fsdino.models.feature_memo``: keyed by the bytes of the exact input tensor, so a hit is exact). This
step encodes each image of the staged benchmark in every view those steps feed the encoder — the
evaluation resize and, with flip-only augmentation, both training views — and writes
``<features.out_dir>/memo.pt`` plus ``manifest.json`` naming the encoder. With ``features.memo: false``
(the paper profiles) it writes only the manifest. Under ``torchrun`` the ranks share the images and
rank 0 writes the memo they would have written alone (:func:`build_memo`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from components.cli import fingerprint, params_main
from components.config import Params
from fsdino.checkpoints import atomic_torch_save, sha256_of
from fsdino.data.base import SegmentationSource
from fsdino.data.benchmark import open_split, read_manifest
from fsdino.data.dataset import rank_batches
from fsdino.data.transforms import EvalTransform
from fsdino.errors import InputError
from fsdino.io.atomic import write_json_atomic
from fsdino.models.build import RANDOM_ENCODER_SEED, build_encoder
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.feature_memo import FeatureMemo, image_key
from fsdino.training.runtime import Runtime, runtime


def encoder_identity(params: Params) -> str:
    """Names the encoder whose features a memo holds: config, input size, weights (or the random seed)."""
    encoder = params.model.encoder
    weights = encoder.weights
    if weights not in ("hub", "random"):
        weights = encoder.sha256 or sha256_of(weights)
    return fingerprint(encoder, weights, params.model.image_size, RANDOM_ENCODER_SEED, torch.__version__)


def benchmark_images(params: Params) -> Iterator[tuple[SegmentationSource, int]]:
    """(source, index) of every image in any split of the staged benchmark, each once."""
    stage_dir = params.benchmark.out
    seen: set[str] = set()
    for name in read_manifest(stage_dir).get("splits", {}):
        split = open_split(stage_dir, name)
        for image_id in sorted({pair[0] for pair in split.pairs}):
            index = split.source.index_of(image_id)
            path = str(split.source.image_path(index))
            if path not in seen:
                seen.add(path)
                yield split.source, index


def views(params: Params, image: np.ndarray) -> list[torch.Tensor]:
    """Every 3×S×S tensor train and evaluate feed the encoder for ``image``."""
    size = params.model.image_size
    blank = np.zeros(image.shape[:2], dtype=np.uint8)
    tensors = [EvalTransform(size)(image, blank)[0]]
    tensors += [view for view, _ in params.train.augment.transform(size).views(image, blank)]
    return tensors


def build_memo(params: Params, encoder: DinoV2Encoder, rt: Runtime) -> FeatureMemo | None:
    """Encode every benchmark image's views into a new memo, in groups of images whose views fill a batch
    of ``features.batch_size``.

    Under ``torchrun`` rank r encodes groups r, r+W, … and rank 0 merges the ranks' features in group
    order (the others return ``None``). Each group is encoded whole, whatever is already stored, so its
    batch and therefore its features are the same on any rank: the memo equals the one-process memo.
    """
    images = list(benchmark_images(params))
    if not images:
        raise InputError(f"{params.benchmark.out}: the staged benchmark lists no image")

    def load(image: tuple[SegmentationSource, int]) -> np.ndarray:
        source, index = image
        return source.load_image(index)

    per_image = len(views(params, load(images[0])))
    group = max(1, -(-params.features.batch_size // per_image))
    mine = rank_batches(len(images), group, rt.rank, rt.world_size)
    computed: list[tuple[int, list[bytes], torch.Tensor, torch.Tensor]] = []
    for numbers in tqdm(mine, desc="features", unit="batch", mininterval=5.0, disable=not rt.is_main):
        batch = torch.stack([view for number in numbers for view in views(params, load(images[number]))])
        features = encoder(batch.to(rt.device))
        half = [tensor.to(device="cpu", dtype=torch.float16) for tensor in (features.layer3, features.last)]
        computed.append((numbers[0], [image_key(image) for image in batch], *half))
    parts = rt.gather_to_main(computed)
    if parts is None:
        return None
    memo = FeatureMemo()
    for _, keys, layer3, last in sorted((item for part in parts for item in part), key=lambda item: item[0]):
        memo.add(keys, layer3, last)
    return memo


def run(params: Params, args: argparse.Namespace | None = None) -> dict[str, Any]:
    settings = params.features
    identity = encoder_identity(params)
    summary: dict[str, Any] = {"memo": settings.memo, "encoder": identity, "image_size": params.model.image_size}
    if settings.memo:
        encoder = build_encoder(params.model.encoder, params.model.image_size)
        with runtime(params.train.loop.device, "off") as rt, torch.inference_mode():
            encoder.to(rt.device)
            memo = build_memo(params, encoder, rt)
        if memo is None:  # a rank other than 0 of a torchrun launch: rank 0 writes
            return summary
        atomic_torch_save(memo.state(), settings.memo_file)
        summary["entries"] = len(memo)
    elif settings.memo_file.exists():
        settings.memo_file.unlink()
    write_json_atomic(settings.manifest, summary)
    return summary


def attach_memo(params: Params, encoder: DinoV2Encoder) -> FeatureMemo | None:
    """Give ``encoder`` the stage's memo (``features.memo``); a memo of another encoder is an error."""
    settings = params.features
    if not settings.memo:
        return None
    if not settings.manifest.is_file() or not settings.memo_file.is_file():
        raise InputError(f"{settings.out_dir}: no feature memo (run the features step first)")
    manifest = json.loads(settings.manifest.read_text())
    if manifest.get("encoder") != encoder_identity(params):
        raise InputError(
            f"{settings.manifest}: the memo was computed by encoder {manifest.get('encoder')!r}, "
            f"expected {encoder_identity(params)!r} (re-run the features step)"
        )
    state = torch.load(settings.memo_file, map_location="cpu", weights_only=True)
    memo = FeatureMemo.from_state(state, max_entries=len(state["keys"]) + settings.max_entries)
    encoder.memo = memo
    return memo


def main(argv: Sequence[str] | None = None) -> int:
    return params_main(run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
