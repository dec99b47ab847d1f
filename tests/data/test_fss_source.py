"""FSS-1000: folders, binarisation at 128, the class split (official lists or the seeded rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fsdino.data import fss
from fsdino.errors import InputError
from tests.data.mini_datasets import FSS_CLASSES, FSS_IMAGES_PER_CLASS


def test_masks_binarise_at_128(fss_root: Path) -> None:
    source = fss.FSS1000(fss_root)
    assert len(source) == len(FSS_CLASSES) * FSS_IMAGES_PER_CLASS
    index = source.index_of("class03/2")
    assert source.classes_in(index) == (4,)
    image, mask = source.load_pair(index, 4)
    assert image.shape == (24, 24, 3)
    assert mask[4:16, 4:20].all() and not mask[16:20].any() and set(np.unique(mask)) == {0, 1}
    assert not source.load_mask(index, 5).any()


def test_seeded_rule_is_deterministic_and_proportional() -> None:
    names = [f"c{index:04d}" for index in range(1000)]
    splits = fss.split_classes(list(reversed(names)))
    assert [len(splits[name]) for name in fss.SPLIT_NAMES] == [520, 240, 240]
    assert splits == fss.split_classes(names)
    assert set().union(*map(set, splits.values())) == set(names)
    assert fss.split_classes(names, seed=1) != splits
    small = fss.split_classes(FSS_CLASSES)
    assert [len(small[name]) for name in fss.SPLIT_NAMES] == [13, 6, 6]


def test_official_lists_are_used_when_given(fss_root: Path, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    for file_name, names in (
        ("trn.txt", FSS_CLASSES[:20]),
        ("val.txt", FSS_CLASSES[20:22]),
        ("test.txt", FSS_CLASSES[22:]),
    ):
        (lists / file_name).write_text("\n".join(names) + "\n")
    splits = fss.split_classes(FSS_CLASSES, lists)
    assert splits["test"] == FSS_CLASSES[22:] and len(splits["train"]) == 20
    (lists / "test.txt").write_text("no_such_class\n")
    with pytest.raises(InputError, match=r"test\.txt: class 'no_such_class' has no folder"):
        fss.split_classes(FSS_CLASSES, lists)


def test_split_pairs_cover_every_test_image(fss_root: Path) -> None:
    source = fss.FSS1000(fss_root)
    test_classes = fss.split_classes(source.class_names)["test"]
    pairs = fss.split_pairs(source, test_classes)
    assert len(pairs) == len(test_classes) * FSS_IMAGES_PER_CLASS
    assert {image_id.split("/")[0] for image_id, _ in pairs} == set(test_classes)


def test_missing_mask_is_named(fss_root: Path) -> None:
    (fss_root / "FSS-1000" / "class07" / "3.png").unlink()
    with pytest.raises(InputError, match=r"class07/3\.png: mask not found"):
        fss.FSS1000(fss_root)
