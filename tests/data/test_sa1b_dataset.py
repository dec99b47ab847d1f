"""The distillation Dataset over a staged SA-1B manifest."""

from __future__ import annotations

import tarfile

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
        source="local",
        tar_dir=release.tar_paths[0].parent,
        num_tars=2,
        output_dir=tmp_path / "out",
        store_dir=tmp_path / "store",
        progress=False,
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


def test_items_are_read_from_the_tars_in_place(manifest, tmp_path):
    dataset = SA1BImages(manifest, 126)
    frame = read_manifest(manifest)
    for row in (0, 4):
        tar = next((tmp_path / "release").glob(frame["tar"][row]))
        with tarfile.open(tar) as archive:
            assert dataset.read_bytes(row) == archive.extractfile(f"./{frame['key'][row]}.jpg").read()
    serial = [batch["image"] for batch in DataLoader(dataset, batch_size=2)]
    parallel = [batch["image"] for batch in DataLoader(dataset, batch_size=2, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_corrupt_image_is_skipped_with_a_warning(manifest, tmp_path):
    frame = read_manifest(manifest)
    tar = tmp_path / "release" / frame["tar"][1]
    with open(tar, "r+b") as handle:  # garbage over the second image's bytes, inside its tar
        handle.seek(int(frame["offset"][1]))
        handle.write(b"\x00" * int(frame["bytes"][1]))
    dataset = SA1BImages(manifest, 126)
    with pytest.warns(RuntimeWarning, match=rf"{frame['tar'][1]}:{frame['key'][1]}\.jpg: unreadable image skipped"):
        item = dataset[1]
    assert (item["index"], item["key"]) == (2, dataset.keys[2])


def test_a_missing_tar_is_an_input_error_naming_it(manifest, tmp_path):
    frame = read_manifest(manifest)
    (tmp_path / "release" / frame["tar"][0]).unlink()
    with pytest.raises(InputError, match=rf"{frame['tar'][0]}: SA-1B shard not found \(re-run the sa1b stage"):
        SA1BImages(manifest, 126)[0]


def test_missing_or_foreign_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        SA1BImages(tmp_path / "manifest.parquet", 126)
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable parquet manifest"):
        SA1BImages(tmp_path / "bad.parquet", 126)
