"""The distillation Dataset over a staged SA-1B manifest."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from components.stage_sa1b import StageSA1BConfig, run
from fsdino.data.sa1b import read_manifest
from fsdino.data.sa1b_images import SA1BImages
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
    for row in range(len(frame)):
        tar = tmp_path / "release" / frame["tar"][row]
        with tarfile.open(tar) as archive:
            assert dataset.read_bytes(row) == archive.extractfile(f"./{frame['key'][row]}.jpg").read()
    tars = json.loads((Path(manifest).parent / "tars.json").read_text())["tars"]
    assert {entry["path"] for entry in tars.values()} == {str(tmp_path / "release" / name) for name in tars}
    serial = [batch["image"] for batch in DataLoader(dataset, batch_size=2)]
    parallel = [batch["image"] for batch in DataLoader(dataset, batch_size=2, num_workers=2)]
    assert len(serial) == 3 and all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    copy = pickle.loads(pickle.dumps(dataset))  # what a spawned worker gets: paths, no open descriptors
    assert copy.reader._handles == {} and copy.read_bytes(5) == dataset.read_bytes(5)


def test_tar_paths_inside_the_working_folder_are_relative_to_the_manifest(tmp_path, monkeypatch):
    release = write_synthetic_sa1b(tmp_path / "clone" / "release", num_tars=1, images_per_tar=2, seed=3)
    name = release.tar_paths[0].name
    monkeypatch.chdir(tmp_path / "clone")
    config = StageSA1BConfig(
        source="local",
        tar_dir=Path("release"),
        num_tars=1,
        output_dir=Path("data/sa1b"),
        store_dir=Path("store"),
        progress=False,
    )
    run(config)
    tars = json.loads(Path("data/sa1b/tars.json").read_text())["tars"]
    assert tars[name]["path"] == f"../../release/{name}"
    monkeypatch.chdir(tmp_path)
    shutil.move(tmp_path / "clone", tmp_path / "moved")  # the clone elsewhere: the relative paths still hold
    dataset = SA1BImages(tmp_path / "moved" / "data" / "sa1b" / "manifest.parquet", 126)
    with tarfile.open(tmp_path / "moved" / "release" / name) as archive:
        assert dataset.read_bytes(1) == archive.extractfile(f"./{dataset.keys[1]}.jpg").read()
    assert dataset[1]["image"].shape == (3, 126, 126)


def test_corrupt_image_is_skipped_with_a_warning(manifest, tmp_path):
    frame = read_manifest(manifest)
    tar = tmp_path / "release" / frame["tar"][1]
    with open(tar, "r+b") as handle:  # garbage over the second image's bytes, inside its tar
        handle.seek(int(frame["offset"][1]))
        handle.write(b"\x00" * int(frame["bytes"][1]))
    dataset = SA1BImages(manifest, 126)
    where = re.escape(f"{tar}:{frame['key'][1]}.jpg")
    with pytest.warns(RuntimeWarning, match=rf"^{where}: unreadable image skipped"):
        item = dataset[1]
    assert (item["index"], item["key"]) == (2, dataset.keys[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per image, not at every epoch
        assert dataset[1]["index"] == 2
    assert dataset[0]["index"] == 0  # the other images of that tar are still read


def test_a_tar_cut_after_staging_is_a_short_read_skipped_with_a_warning(manifest, tmp_path):
    frame = read_manifest(manifest)
    assert frame["tar"][2] == frame["tar"][0] != frame["tar"][3]  # row 2 is the last image of the first tar
    tar = tmp_path / "release" / frame["tar"][2]
    with open(tar, "r+b") as handle:
        handle.truncate(int(frame["offset"][2]) + 10)
    dataset = SA1BImages(manifest, 126)
    with pytest.warns(RuntimeWarning, match=rf"{frame['key'][2]}\.jpg: unreadable image skipped \(.*short read"):
        item = dataset[2]
    assert (item["index"], item["key"]) == (3, dataset.keys[3])  # the next one, from the other tar


def test_a_missing_tar_is_an_input_error_naming_it(manifest, tmp_path):
    frame = read_manifest(manifest)
    missing = tmp_path / "release" / frame["tar"][0]
    missing.unlink()
    dataset = SA1BImages(manifest, 126)
    assert dataset[3]["index"] == 3  # the other tar is still read
    with pytest.raises(InputError, match=rf"^{re.escape(str(missing))}: SA-1B shard not found \(re-run the sa1b stage"):
        dataset[0]


def test_a_missing_tar_table_is_an_input_error(manifest):
    (Path(manifest).parent / "tars.json").unlink()
    with pytest.raises(InputError, match=r"tars\.json: missing or not a tar table \(run the stage_sa1b step first\)"):
        SA1BImages(manifest, 126)


def test_missing_or_foreign_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        SA1BImages(tmp_path / "manifest.parquet", 126)
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable parquet manifest"):
        SA1BImages(tmp_path / "bad.parquet", 126)
