"""The features step: every view train and evaluate feed the encoder is in the memo, and a memo of
another encoder is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from components import features
from components.benchmark_data import FoldData
from components.config import Params
from components.profile import render
from components.stage_synthetic import SyntheticStageConfig
from components.stage_synthetic import run as stage_synthetic
from fsdino.data.dataset import make_loader
from fsdino.errors import InputError
from fsdino.models.build import build_encoder

SIZE = 42


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Params:
    root = tmp_path_factory.mktemp("features")
    benchmark = SyntheticStageConfig(out=root / "benchmark", num_images=24, min_size=48, max_size=64)
    stage_synthetic(benchmark)
    values = yaml.safe_load(render("demo"))
    values["model"]["image_size"] = SIZE
    values["distill"]["image_sizes"] = [14, 28, SIZE]
    values["benchmark"]["synthetic"] = benchmark.model_dump(mode="json")
    values["features"] = {"memo": True, "out_dir": str(root / "features"), "batch_size": 8}
    values["tracking"] = {"enabled": False}
    return Params.model_validate(values)


@pytest.fixture(scope="module")
def built(params: Params) -> dict:
    return features.run(params)


def test_the_memo_holds_three_views_of_every_image(params: Params, built: dict) -> None:
    images = list(features.benchmark_images(params))
    assert len(images) == 24
    assert built["memo"] is True and built["image_size"] == SIZE
    # eval resize + two training views; a square image's eval resize equals its unflipped training view
    square = sum(
        1 for source, index in images if source.load_image(index).shape[0] == source.load_image(index).shape[1]
    )
    assert built["entries"] == 3 * len(images) - square
    manifest = json.loads(params.features.manifest.read_text())
    assert manifest["encoder"] == features.encoder_identity(params)


def test_training_and_evaluation_batches_only_hit(params: Params, built: dict) -> None:
    encoder = build_encoder(params.model.encoder, SIZE)
    memo = features.attach_memo(params, encoder)
    assert memo is not None and len(memo) == built["entries"]
    data = FoldData.open(params.benchmark.out, 0)
    transform = params.train.augment.transform(SIZE)
    sampler = data.train_sampler(1, seed=0, episodes_per_epoch=12)
    datasets = [data.train_dataset(sampler, epoch, transform, seed=0) for epoch in (0, 1)]
    datasets.append(data.test_dataset(data.test_episodes(1, 12, seed=0), SIZE))
    for dataset in datasets:
        for batch in make_loader(dataset, batch_size=4):
            cached = encoder(batch["query_image"])
            encoder.memo = None
            fresh = encoder(batch["query_image"])
            encoder.memo = memo
            torch.testing.assert_close(cached.last, fresh.last.half().float(), rtol=0, atol=0)
    assert memo.misses == 0 and memo.hits == 36


def test_a_memo_of_another_encoder_or_none_is_refused(params: Params, built: dict, tmp_path: Path) -> None:
    encoder = build_encoder(params.model.encoder, SIZE)
    manifest = params.features.manifest
    original = manifest.read_text()
    try:
        manifest.write_text(json.dumps({**json.loads(original), "encoder": "0123"}))
        with pytest.raises(InputError, match=r"computed by encoder '0123'.*re-run the features step"):
            features.attach_memo(params, encoder)
    finally:
        manifest.write_text(original)
    elsewhere = params.model_copy(update={"features": params.features.model_copy(update={"out_dir": tmp_path})})
    with pytest.raises(InputError, match="no feature memo"):
        features.attach_memo(elsewhere, encoder)
    off = params.model_copy(update={"features": params.features.model_copy(update={"memo": False})})
    assert features.attach_memo(off, encoder) is None and encoder.memo is None


def test_without_memo_only_the_manifest_is_written(params: Params, tmp_path: Path) -> None:
    settings = params.features.model_copy(update={"memo": False, "out_dir": tmp_path})
    (tmp_path / "memo.pt").write_bytes(b"stale")
    summary = features.run(params.model_copy(update={"features": settings}))
    assert summary == {"memo": False, "encoder": features.encoder_identity(params), "image_size": SIZE}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
