"""The synthetic cross-domain datasets: official FSS-1000 / DAVIS-2017 layouts, byte-identical per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsdino.data.davis import Davis17, query_pairs
from fsdino.data.fss import FSS1000, split_classes
from fsdino.data.synthetic_davis import SyntheticDavisSpec, write_synthetic_davis
from fsdino.data.synthetic_fss import SyntheticFssSpec, generate_fss_image, write_synthetic_fss
from fsdino.data.synthetic_shapes import class_names
from tests.data.mini_datasets import folder_digest

FSS_SMALL = SyntheticFssSpec(num_classes=6, images_per_class=3, size=48)
DAVIS_SMALL = SyntheticDavisSpec(sequences=3, frames=4, height=54, width=96)


def test_fss_layout_reads_through_the_fss_loader(tmp_path: Path) -> None:
    folder = write_synthetic_fss(tmp_path, FSS_SMALL)
    assert folder == tmp_path / "FSS-1000" and sorted(p.name for p in tmp_path.iterdir()) == ["FSS-1000"]
    source = FSS1000(tmp_path)
    assert source.class_names == sorted(class_names()[:6])
    assert len(source) == 6 * 3
    assert [source.image_id(i).split("/")[1] for i in range(3)] == ["1", "2", "3"]
    for index in range(len(source)):
        image = source.load_image(index)
        mask = source.load_mask(index, source.classes_in(index)[0])
        assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
        assert 0.05 < mask.mean() < 0.7  # one large object, not the whole frame
    raw = np.asarray(Image.open(folder / source.class_names[0] / "1.png"))
    assert set(np.unique(raw)) <= {0, 255}
    assert {len(names) for names in split_classes(source.class_names).values()} == {3, 1, 2}


def test_fss_objects_are_centred(tmp_path: Path) -> None:
    _, mask = generate_fss_image(SyntheticFssSpec(size=64), class_id=3, number=1)
    ys, xs = np.nonzero(mask)
    assert abs(ys.mean() - 32) < 12 and abs(xs.mean() - 32) < 12


def test_fss_same_seed_same_bytes(tmp_path: Path) -> None:
    first = folder_digest(write_synthetic_fss(tmp_path / "a", FSS_SMALL))
    assert first == folder_digest(write_synthetic_fss(tmp_path / "b", FSS_SMALL))
    other = folder_digest(write_synthetic_fss(tmp_path / "c", SyntheticFssSpec(**{**FSS_SMALL.__dict__, "seed": 1})))
    assert other.keys() == first.keys() and other != first


def test_davis_layout_reads_through_the_davis_loader(tmp_path: Path) -> None:
    write_synthetic_davis(tmp_path / "DAVIS", DAVIS_SMALL)
    source = Davis17(tmp_path / "DAVIS")
    assert source.sequences == ["synth-00", "synth-01", "synth-02"]
    assert len(source) == 3 * 4 and source.image_id(1) == "synth-00/00001"
    annotation = Image.open(source.annotation_path(0))
    assert annotation.mode == "P" and annotation.size == (96, 54)
    for sequence in source.sequences:
        objects = source.objects(sequence)
        assert 1 <= len(objects) <= 3 and objects == tuple(range(1, len(objects) + 1))
    pairs = query_pairs(source)
    assert len(pairs) == sum(3 * len(source.objects(s)) for s in source.sequences)  # every frame but the first


def test_davis_objects_move_and_keep_their_look(tmp_path: Path) -> None:
    write_synthetic_davis(tmp_path, DAVIS_SMALL)
    source = Davis17(tmp_path)
    first, last = source.first_frame("synth-00"), source.first_frame("synth-00") + 3
    start, end = source.load_mask(first, 1), source.load_mask(last, 1)
    assert start.sum() > 0
    assert not np.array_equal(start, end)  # it moved (or changed size)


def test_davis_same_seed_same_bytes_and_no_leftovers(tmp_path: Path) -> None:
    first = folder_digest(write_synthetic_davis(tmp_path / "a", DAVIS_SMALL))
    assert first == folder_digest(write_synthetic_davis(tmp_path / "b", DAVIS_SMALL))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: SyntheticFssSpec(num_classes=21),
        lambda: SyntheticFssSpec(images_per_class=1),
        lambda: SyntheticDavisSpec(frames=2),
        lambda: SyntheticDavisSpec(max_objects=4),
    ],
)
def test_inconsistent_specs_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()
