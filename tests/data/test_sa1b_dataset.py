"""The distillation Dataset over a staged SA-1B manifest."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from components.stage_sa1b import StageSA1BConfig, run
from fsdino.data.sa1b import SA1BImages, read_manifest
from fsdino.data.synthetic_sa1b import write_synthetic_sa1b
from fsdino.errors import InputError


@pytest.fixture
def manifest(tmp_path):
    release = write_synthetic_sa1b(tmp_path / "release", num_tars=2, images_per_tar=3, seed=2)
    config = StageSA1BConfig(
        source="local", tar_dir=release.tar_paths[0].parent, num_tars=2, output_dir=tmp_path / "out", progress=False
    )
    return run(config)["manifest"]


@pytest.mark.parametrize("resize", ["stretch", "center_crop"])
def test_items_are_square_unit_range_images_with_keys(manifest, resize):
    dataset = SA1BImages(manifest, 126, resize=resize)
    frame = read_manifest(manifest)
    assert len(dataset) == 6 and dataset.keys == frame["key"].tolist()
    item = dataset[4]
    assert item["image"].shape == (3, 126, 126) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert float(item["image"].std()) > 0.01
    assert (item["index"], item["key"]) == (4, frame["key"][4])
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 126, 126) and batch["index"].tolist() == [0, 1, 2, 3]
    assert list(batch["key"]) == frame["key"][:4].tolist()


def test_other_sizes_and_size_checks(manifest):
    assert SA1BImages(manifest, 252)[0]["image"].shape == (3, 252, 252)
    assert SA1BImages(manifest, 64, multiple_of=16)[0]["image"].shape == (3, 64, 64)
    with pytest.raises(InputError, match="image_size: expected a positive multiple of 14, got 100"):
        SA1BImages(manifest, 100)


def test_corrupt_image_is_skipped_with_a_warning(manifest):
    dataset = SA1BImages(manifest, 126)
    dataset.paths[1].write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.warns(RuntimeWarning, match=f"{dataset.paths[1]}: unreadable image skipped"):
        item = dataset[1]
    assert (item["index"], item["key"]) == (2, dataset.keys[2])


def test_missing_or_foreign_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        SA1BImages(tmp_path / "manifest.parquet", 126)
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable parquet manifest"):
        SA1BImages(tmp_path / "bad.parquet", 126)
