"""HDMNet's training-list filters (``fsdino/data/train_lists.py``) through the PASCAL-5i and COCO-20i stages, on
miniature datasets whose objects have exact areas (``tests/data/mini_datasets.py``: ``VOC_SIZED_TRAIN``,
``COCO_SIZED_TRAIN``; fold 0, whose novel classes are VOC 1-5 and COCO category 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from components import stage_coco, stage_pascal
from fsdino.data.fss import FSS1000
from fsdino.data.splits import read_pairs
from fsdino.data.train_lists import HDMNET_MIN_OBJECT_PIXELS, TrainListRule, filter_train_pairs
from tests.data.mini_datasets import make_coco_sized, make_fss, make_voc_sized

HDMNET = {"exclude_novel": True, "min_object_pixels": HDMNET_MIN_OBJECT_PIXELS}
VOC_ALL = [
    ("2009_000001", 6), ("2009_000002", 7), ("2009_000003", 8), ("2009_000004", 8), ("2009_000004", 9),
    ("2009_000005", 6), ("2009_000006", 6), ("2009_000006", 8), ("2009_000007", 7), ("2009_000007", 9),
]  # fmt: skip
COCO = "COCO_train2014_{:012d}".format


def _pascal_train(root: Path, out: Path, **rule: object) -> tuple[list, dict]:
    config = stage_pascal.PascalStageConfig(root=root, out=out, folds=[0], **rule)
    manifest = stage_pascal.run(config)
    return read_pairs(out / "splits" / "fold0_train.txt"), manifest


def test_hdmnet_threshold_is_2_32_32_pixels() -> None:
    assert HDMNET_MIN_OBJECT_PIXELS == 2048 and TrainListRule().keeps_all


@pytest.mark.parametrize(
    ("rule", "dropped"),
    [
        ({}, set()),  # HSNet's lists: every base class with a pixel
        ({"exclude_novel": True}, {"2009_000003"}),  # the image with a 9-px novel object goes whole
        ({"min_object_pixels": 2048}, {"2009_000002", ("2009_000004", 9)}),  # 2,047 px and 400 px
    ],
)
def test_each_pascal_filter_alone(tmp_path: Path, rule: dict, dropped: set) -> None:
    train, _ = _pascal_train(make_voc_sized(tmp_path / "voc"), tmp_path / "out", **rule)
    assert train == [pair for pair in VOC_ALL if pair[0] not in dropped and pair not in dropped]


def test_hdmnet_pascal_list_keeps_exactly_these_images_and_pairs(tmp_path: Path) -> None:
    train, manifest = _pascal_train(make_voc_sized(tmp_path / "voc"), tmp_path / "out", **HDMNET)
    # out: 000002 (2,047 px), 000003 (novel class 1), (000004, 9) (400 px); in: 000001's 2,048 px (inclusive
    # bound) and 000005's two 1,024-px objects of class 6 (the class's pixels together)
    assert train == [
        ("2009_000001", 6), ("2009_000004", 8), ("2009_000005", 6), ("2009_000006", 6), ("2009_000006", 8),
        ("2009_000007", 7), ("2009_000007", 9),
    ]  # fmt: skip
    entry = manifest["splits"]["fold0_train"]
    assert (entry["pairs"], entry["images"]) == (7, 5) and entry["class_counts"] == {"6": 3, "7": 1, "8": 2, "9": 1}
    assert (manifest["exclude_novel"], manifest["min_object_pixels"]) == (True, 2048)
    assert manifest["splits"]["fold0_val"]["pairs"] == 2  # test lists are not filtered
    unfiltered = _pascal_train(tmp_path / "voc", tmp_path / "all")[1]
    assert (unfiltered["splits"]["fold0_train"]["pairs"], unfiltered["splits"]["fold0_train"]["images"]) == (10, 7)


def test_hdmnet_filters_apply_to_hsnet_lists_too(tmp_path: Path) -> None:
    root, lists = make_voc_sized(tmp_path / "voc"), tmp_path / "lists"
    for split, fold, names in (("val", 0, ["2010_000001__02"]), ("trn", 1, ["2009_000002__07", "2009_000006__06"])):
        (lists / split).mkdir(parents=True, exist_ok=True)
        (lists / split / f"fold{fold}.txt").write_text("".join(f"{name}\n" for name in names))
    for other in (2, 3):
        (lists / "trn" / f"fold{other}.txt").write_text("2009_000003__08\n")
    train, _ = _pascal_train(root, tmp_path / "out", hsnet_lists=lists, **HDMNET)
    assert train == [("2009_000006", 6)]


def test_hdmnet_coco_list_keeps_exactly_these_images_and_pairs(tmp_path: Path) -> None:
    root = make_coco_sized(tmp_path / "coco")
    config = stage_coco.CocoStageConfig(root=root, out=tmp_path / "out", folds=[0], **HDMNET)
    manifest = stage_coco.run(config)
    # out: 21 (2,047 px), 22 (novel category 1), 25 (two 1,024-px instances whose union is 1,984 px);
    # in: 20 (2,048 px), 23 (two overlapping instances, union 2,304 px), both classes of 24
    assert read_pairs(tmp_path / "out" / "splits" / "fold0_train.txt") == [
        (COCO(20), 2),
        (COCO(23), 2),
        (COCO(24), 3),
        (COCO(24), 6),
    ]
    entry = manifest["splits"]["fold0_train"]
    assert (entry["pairs"], entry["images"]) == (4, 3)
    unfiltered = stage_coco.run(stage_coco.CocoStageConfig(root=root, out=tmp_path / "all", folds=[0]))
    assert (unfiltered["splits"]["fold0_train"]["pairs"], unfiltered["splits"]["fold0_train"]["images"]) == (7, 6)
    novel_only = stage_coco.run(
        stage_coco.CocoStageConfig(root=root, out=tmp_path / "novel", folds=[0], exclude_novel=True)
    )
    assert (novel_only["splits"]["fold0_train"]["pairs"], novel_only["splits"]["fold0_train"]["images"]) == (6, 5)


def test_class_pixels_default_counts_each_class_mask(tmp_path: Path) -> None:
    source = FSS1000(make_fss(tmp_path / "fss"))
    # mini FSS masks: rows 4-15 of columns 4-19 are ≥ 128 (12 × 16 px)
    assert source.class_pixels(0) == {source.classes_in(0)[0]: 192}
    pairs = [(source.image_id(0), source.classes_in(0)[0])]
    assert filter_train_pairs(pairs, source, (), TrainListRule(min_object_pixels=193)) == []
    assert filter_train_pairs(pairs, source, (), TrainListRule(min_object_pixels=192)) == pairs
