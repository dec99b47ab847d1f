"""DAVIS-17: palette annotations, objects from the first frame, first-frame supports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsdino.data import davis
from fsdino.errors import InputError
from tests.data.mini_datasets import DAVIS_SEQUENCES, davis_labels


def test_frames_objects_and_masks(davis_root: Path) -> None:
    source = davis.Davis17(davis_root)
    assert len(source) == sum(DAVIS_SEQUENCES.values())
    assert source.image_id(0) == "bears/00000" and source.objects("dogs-jump") == (1, 2)
    index = source.index_of("bears/00002")
    image, mask = source.load_pair(index, 1)
    assert image.shape == (24, 32, 3)
    labels = davis_labels(2)
    assert np.array_equal(mask == 1, labels == 1) and np.array_equal(mask == 255, labels == 255)
    assert source.classes_in(index) == (1, 2)


def test_pairs_and_first_frame_episodes(davis_root: Path) -> None:
    source = davis.Davis17(davis_root)
    pairs = davis.query_pairs(source)
    assert len(pairs) == 2 * sum(frames - 1 for frames in DAVIS_SEQUENCES.values())
    assert pairs[:2] == [("bears/00001", 1), ("bears/00001", 2)]
    episodes = davis.first_frame_episodes(source, pairs)
    assert all(episode.support_ids == (episode.query_id.split("/")[0] + "/00000",) for episode in episodes)
    assert episodes[-1].query_id == "dogs-jump/00002"


def test_rgb_annotation_is_rejected(davis_root: Path) -> None:
    path = davis_root / "Annotations" / "480p" / "bears" / "00000.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(InputError, match=r"bears/00000\.png: expected a single-channel or palette PNG"):
        davis.Davis17(davis_root).objects("bears")


def test_missing_sequence_list(davis_root: Path) -> None:
    (davis_root / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(InputError, match=r"val\.txt: sequence list not found"):
        davis.Davis17(davis_root)
