"""COCO-20i: interleaved folds in sorted category-id order, masks from polygons / RLE / crowd."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fsdino.data import coco
from fsdino.errors import InputError
from tests.data.mini_datasets import COCO_CATEGORY_IDS, coco_blob, write_jpeg


def test_folds_take_every_fourth_sorted_category() -> None:
    shuffled = list(reversed(COCO_CATEGORY_IDS))  # the rule sorts the ids itself
    fold0 = coco.fold_category_ids(shuffled, 0)
    assert fold0 == tuple(COCO_CATEGORY_IDS[position] for position in range(0, 80, 4))
    assert fold0[:6] == (1, 5, 9, 14, 18, 22) and len(fold0) == 20
    assert coco.fold_category_ids(shuffled, 1)[:4] == (2, 6, 10, 15)
    folds = [set(coco.fold_category_ids(shuffled, fold)) for fold in range(4)]
    assert set().union(*folds) == set(COCO_CATEGORY_IDS) and sum(map(len, folds)) == 80
    assert set(coco.base_category_ids(shuffled, 0)) == set(COCO_CATEGORY_IDS) - folds[0]


def test_polygon_rle_and_crowd_masks(coco_root: Path) -> None:
    source = coco.CocoInstances(coco_root, "val2014")
    first, crowd = source.index_of("COCO_val2014_000000000001"), source.index_of("COCO_val2014_000000000002")
    assert source.classes_in(first) == (1, 2) and source.classes_in(crowd) == (1,)
    polygon = source.load_mask(first, 1)
    expected = np.zeros_like(polygon)
    expected[2:8, 2:10] = 1
    assert np.array_equal(polygon, expected)
    assert np.array_equal(source.load_mask(first, 2), coco_blob())  # compressed RLE
    assert np.array_equal(source.load_mask(crowd, 1), coco_blob())  # crowd, uncompressed RLE
    assert not source.load_mask(first, 5).any()
    image, mask = source.load_pair(first, 2)
    assert image.shape == (24, 32, 3) and set(np.unique(mask)) <= {0, 1}


def test_crowd_can_be_excluded(coco_root: Path) -> None:
    source = coco.CocoInstances(coco_root, "val2014", include_crowd=False)
    crowd = source.index_of("COCO_val2014_000000000002")
    assert source.classes_in(crowd) == () and not source.load_mask(crowd, 1).any()


def test_fold_pairs(coco_root: Path) -> None:
    val, train = coco.CocoInstances(coco_root, "val2014"), coco.CocoInstances(coco_root, "train2014")
    assert coco.fold_pairs(val, COCO_CATEGORY_IDS, 0, novel=True) == [
        ("COCO_val2014_000000000001", 1),
        ("COCO_val2014_000000000002", 1),
        ("COCO_val2014_000000000003", 1),
        ("COCO_val2014_000000000003", 5),
    ]
    # category 1 is novel in fold 0: image 11's instance of it is not a training pair
    assert coco.fold_pairs(train, COCO_CATEGORY_IDS, 0, novel=False) == [
        ("COCO_train2014_000000000010", 2),
        ("COCO_train2014_000000000011", 3),
    ]


def _edit_val(coco_root: Path, edit) -> Path:
    path = coco_root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_unknown_category_names_the_file(coco_root: Path) -> None:
    _edit_val(coco_root, lambda data: data["annotations"][0].update(category_id=12))
    with pytest.raises(InputError, match=r"instances_val2014\.json: annotation 1: category_id 12 not in categories"):
        coco.CocoInstances(coco_root, "val2014")


def test_rle_of_wrong_size_is_rejected(coco_root: Path) -> None:
    _edit_val(coco_root, lambda data: data["annotations"][2]["segmentation"].update(size=[10, 10]))
    with pytest.raises(InputError, match=r"instances_val2014\.json: annotation 3: RLE size"):
        coco.CocoInstances(coco_root, "val2014")


def test_missing_or_broken_annotation_file(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2014.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"instances_train2014\.json: not valid JSON"):
        coco.CocoInstances(coco_root, "train2014")
    path.unlink()
    with pytest.raises(InputError, match=r"instances_train2014\.json: annotation file not found"):
        coco.CocoInstances(coco_root, "train2014")


def test_image_size_must_match_the_json(coco_root: Path) -> None:
    write_jpeg(coco_root / "val2014" / "COCO_val2014_000000000003.jpg", 20, 20, 0)
    source = coco.CocoInstances(coco_root, "val2014")
    with pytest.raises(InputError, match=r"COCO_val2014_000000000003\.jpg: image is 20x20"):
        source.load_image(source.index_of("COCO_val2014_000000000003"))
