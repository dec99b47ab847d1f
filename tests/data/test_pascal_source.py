"""PASCAL-5i: folds, pairs, masks read from VOC PNGs, HSNet lists and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsdino.data import pascal
from fsdino.data.train_lists import TrainListRule, filter_train_pairs
from fsdino.errors import InputError
from tests.data.mini_datasets import VOC_TRAIN, VOC_VAL


def test_fold_classes_follow_5f_plus_1() -> None:
    assert pascal.fold_classes(0) == (1, 2, 3, 4, 5)
    assert pascal.fold_classes(1) == (6, 7, 8, 9, 10)
    assert pascal.fold_classes(3) == (16, 17, 18, 19, 20)
    assert len(pascal.base_classes(1)) == 15 and not set(pascal.base_classes(1)) & {6, 7, 8, 9, 10}
    with pytest.raises(InputError, match="fold"):
        pascal.fold_classes(4)


def test_image_sets_split_train_aug_from_val(voc_root: Path) -> None:
    train_ids, val_ids = pascal.image_sets(voc_root)
    assert train_ids == sorted(VOC_TRAIN) and val_ids == sorted(VOC_VAL)


def test_masks_keep_ignore_and_binarise(voc_root: Path) -> None:
    source = pascal.PascalVOC(voc_root)
    index = source.index_of("2008_000002")
    assert source.classes_in(index) == (6, 9)
    image, mask = source.load_pair(index, 6)
    assert image.dtype == np.uint8 and image.shape == (*mask.shape, 3)
    assert set(np.unique(mask)) == {0, 1, 255}
    labels = source.load_labels(index)
    assert np.array_equal(mask == 1, labels == 6)
    assert np.array_equal(mask == 255, labels == 255)


def test_fold_pairs_counts(voc_root: Path) -> None:
    train_ids, val_ids = pascal.image_sets(voc_root)
    classes = pascal.scan_classes(pascal.PascalVOC(voc_root, train_ids + val_ids))
    train, val = pascal.fold_pairs(classes, train_ids, val_ids, fold=1)
    assert val == [("2008_000002", 6), ("2008_000002", 9), ("2008_000003", 10), ("2008_000005", 6), ("2008_000006", 9)]
    assert all(class_id not in range(6, 11) for _, class_id in train)
    train0, val0 = pascal.fold_pairs(classes, train_ids, val_ids, fold=0)
    # 2007_000001 holds only class 1 (novel in fold 0): absent; 2007_000002 (1 and 6) stays as class 6.
    assert train0 == [
        ("2007_000002", 6), ("2007_000003", 6), ("2007_000003", 7), ("2007_000004", 15),
        ("2007_000005", 15), ("2007_000005", 20), ("2007_000006", 11),
    ]  # fmt: skip
    assert val0 == [("2008_000001", 2), ("2008_000003", 2), ("2008_000004", 3), ("2008_000006", 2)]
    strict = filter_train_pairs(
        train0, pascal.PascalVOC(voc_root, train_ids), pascal.fold_classes(0), TrainListRule(exclude_novel=True)
    )
    assert [pair for pair in train0 if pair[0] != "2007_000002"] == strict


def test_hsnet_lists(tmp_path: Path) -> None:
    for split, fold, lines in (("val", 0, "2008_000001__02\n2008_000003__02\n"), ("trn", 1, "2007_000003__06\n")):
        (tmp_path / split).mkdir(exist_ok=True)
        (tmp_path / split / f"fold{fold}.txt").write_text(lines)
    for other in (2, 3):
        (tmp_path / "trn" / f"fold{other}.txt").write_text("2007_000006__11\n")
    train, val = pascal.hsnet_fold_pairs(tmp_path, 0)
    assert val == [("2008_000001", 2), ("2008_000003", 2)]
    assert train == [("2007_000003", 6), ("2007_000006", 11)]
    (tmp_path / "val" / "fold0.txt").write_text("2008_000001__21\n")
    with pytest.raises(InputError, match=r"fold0\.txt:1"):
        pascal.hsnet_fold_pairs(tmp_path, 0)


def test_missing_folder_names_it(tmp_path: Path) -> None:
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(InputError, match="SegmentationClassAug"):
        pascal.PascalVOC(tmp_path)


def test_rgb_mask_is_rejected(voc_root: Path) -> None:
    path = voc_root / "VOC2012" / "SegmentationClassAug" / "2008_000001.png"
    Image.open(path).convert("RGB").save(path)
    source = pascal.PascalVOC(voc_root)
    with pytest.raises(InputError, match=r"2008_000001\.png.*single-channel or palette"):
        source.load_mask(source.index_of("2008_000001"), 2)


def test_class_out_of_range_is_rejected(voc_root: Path) -> None:
    path = voc_root / "VOC2012" / "SegmentationClassAug" / "2007_000004.png"
    labels = np.asarray(Image.open(path)).copy()
    labels[5, 5] = 37
    Image.fromarray(labels).save(path)
    source = pascal.PascalVOC(voc_root)
    with pytest.raises(InputError, match=r"2007_000004\.png: class id 37 out of range"):
        source.classes_in(source.index_of("2007_000004"))


def test_size_mismatch_is_rejected(voc_root: Path) -> None:
    path = voc_root / "VOC2012" / "SegmentationClassAug" / "2007_000003.png"
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(path)
    source = pascal.PascalVOC(voc_root)
    with pytest.raises(InputError, match=r"2007_000003\.png: mask is 5x5"):
        source.check_sizes(source.index_of("2007_000003"))
    with pytest.raises(InputError, match="expected equal sizes"):
        source.load_pair(source.index_of("2007_000003"), 6)


def test_kept_decoded_pairs_are_the_same_read_only_arrays_up_to_the_limit(voc_root: Path) -> None:
    source = pascal.PascalVOC(voc_root)
    plain = [source.load_pair(index, source.classes_in(index)[0]) for index in range(2)]
    source.keep_decoded(1)
    first = source.load_pair(0, source.classes_in(0)[0])
    assert source.load_pair(0, source.classes_in(0)[0])[0] is first[0]  # served from memory
    assert not first[0].flags.writeable and not first[1].flags.writeable
    second = source.load_pair(1, source.classes_in(1)[0])
    assert source.load_pair(1, source.classes_in(1)[0])[0] is not second[0]  # beyond the limit: not kept
    for (image, mask), (kept_image, kept_mask) in zip(plain, [first, second], strict=True):
        assert np.array_equal(image, kept_image) and np.array_equal(mask, kept_mask)
    source.keep_decoded(0)
    assert source.load_pair(0, source.classes_in(0)[0])[0] is not first[0]
