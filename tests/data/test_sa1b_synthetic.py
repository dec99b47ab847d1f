"""The synthetic SA-1B generator: deterministic bytes, the release's layout and JSON schema."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from fsdino.data.synthetic_sa1b import write_synthetic_sa1b

# pycocotools 2.0.11 still calls np.array(copy=False) inside decode (numpy 2 warns, result unchanged)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _digests(paths) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = write_synthetic_sa1b(tmp_path / "a", num_tars=2, images_per_tar=2, seed=3)
    second = write_synthetic_sa1b(tmp_path / "b", num_tars=2, images_per_tar=2, seed=3)
    other = write_synthetic_sa1b(tmp_path / "c", num_tars=2, images_per_tar=2, seed=4)
    assert _digests(first.tar_paths) == _digests(second.tar_paths)
    assert _digests(first.tar_paths) != _digests(other.tar_paths)
    assert [path.name for path in first.tar_paths] == ["sa_000000.tar", "sa_000001.tar"]
    assert first.image_ids == {"sa_000000.tar": [1, 2], "sa_000001.tar": [3, 4]}


def test_members_and_json_follow_the_release(tmp_path):
    release = write_synthetic_sa1b(tmp_path, num_tars=1, images_per_tar=2, masks_per_image=3, seed=0)
    with tarfile.open(release.tar_paths[0], "r:*") as archive:
        names = archive.getnames()
        assert names == ["./sa_1.jpg", "./sa_1.json", "./sa_2.jpg", "./sa_2.json"]
        assert {member.mtime for member in archive.getmembers()} == {1_680_000_000}
        image = Image.open(io.BytesIO(archive.extractfile("./sa_2.jpg").read()))
        record = json.loads(archive.extractfile("./sa_2.json").read())
    assert set(record) == {"image", "annotations"}
    assert record["image"] == {"image_id": 2, "width": image.width, "height": image.height, "file_name": "sa_2.jpg"}
    assert 160 <= image.width <= 256 and 160 <= image.height <= 256
    assert len(record["annotations"]) == 3
    for annotation in record["annotations"]:
        assert set(annotation) == {
            "id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box", "point_coords"
        }  # fmt: skip
        rle = {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
        mask = mask_utils.decode(rle)
        assert mask.shape == (image.height, image.width)
        assert int(mask.sum()) == annotation["area"] > 0
        x, y, width, height = annotation["bbox"]
        rows, columns = np.nonzero(mask)
        assert (x, y, x + width, y + height) == (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
        point_x, point_y = annotation["point_coords"][0]
        assert mask[int(point_y), int(point_x)] == 1
        assert annotation["crop_box"] == [0.0, 0.0, float(image.width), float(image.height)]


def test_links_file_is_the_release_tsv(tmp_path):
    release = write_synthetic_sa1b(tmp_path, num_tars=2, images_per_tar=1, base_url="http://127.0.0.1:9/x/")
    assert release.links_path.read_text().splitlines() == [
        "file_name\tcdn_link",
        "sa_000000.tar\thttp://127.0.0.1:9/x/sa_000000.tar",
        "sa_000001.tar\thttp://127.0.0.1:9/x/sa_000001.tar",
    ]
