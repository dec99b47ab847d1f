"""The synthetic benchmark: byte-identical per seed, PASCAL layout, several classes per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsdino.data import pascal
from fsdino.data.synthetic import SyntheticSpec, generate_image, write_synthetic_pascal
from fsdino.data.synthetic_shapes import class_family, class_names
from tests.data.mini_datasets import folder_digest

SMALL = SyntheticSpec(num_images=12, min_size=64, max_size=96)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = folder_digest(write_synthetic_pascal(tmp_path / "a", SMALL))
    assert first == folder_digest(write_synthetic_pascal(tmp_path / "b", SMALL))
    other = folder_digest(write_synthetic_pascal(tmp_path / "c", SyntheticSpec(**{**SMALL.__dict__, "seed": 1})))
    assert first.keys() == other.keys() and first != other
    assert sorted(path.name for path in tmp_path.joinpath("a").iterdir()) == ["VOC2012"]  # no leftovers


def test_loads_through_the_pascal_loader(tmp_path: Path) -> None:
    write_synthetic_pascal(tmp_path, SMALL)
    train_ids, val_ids = pascal.image_sets(tmp_path)
    assert len(train_ids) == 9 and len(val_ids) == 3
    source = pascal.PascalVOC(tmp_path)
    for index in range(len(source)):
        classes = source.classes_in(index)
        assert len(classes) >= 2 and all(1 <= class_id <= 20 for class_id in classes)
        image, mask = source.load_pair(index, classes[0])
        assert image.shape[:2] == mask.shape and 64 <= min(mask.shape) <= max(mask.shape) <= 96
        assert set(np.unique(mask)) == {0, 1, 255}


def test_objects_are_exact_and_bordered_by_ignore() -> None:
    image, labels = generate_image(SyntheticSpec(ignore_border=2), 3)
    objects = (labels > 0) & (labels < 255)
    ignore = labels == 255
    assert ignore.any() and not (ignore & objects).any()
    # every ignore pixel lies within 2 px of an object, and no background pixel touches an object
    padded = np.pad(objects, 2)
    near = np.zeros_like(objects)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near |= padded[2 + dy : 2 + dy + objects.shape[0], 2 + dx : 2 + dx + objects.shape[1]]
    assert np.array_equal(ignore, near & ~objects)
    assert image.dtype == np.uint8 and image.shape == (*labels.shape, 3)


def test_classes_are_distinct_shape_texture_families() -> None:
    families = [class_family(class_id) for class_id in range(1, 21)]
    assert len(set(families)) == 20 and len(set(class_names())) == 20
    for fold in range(4):
        shapes = {families[class_id - 1][0] for class_id in pascal.fold_classes(fold)}
        textures = {families[class_id - 1][1] for class_id in pascal.fold_classes(fold)}
        assert len(shapes) == 5 and len(textures) >= 3
