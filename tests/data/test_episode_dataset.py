"""The episode Dataset and loader: shapes, identical items whatever the workers, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.stage_synthetic import SyntheticStageConfig, run
from fsdino.data.benchmark import evaluation_episodes, open_split
from fsdino.data.dataset import EpisodeDataset, make_loader
from fsdino.data.episodes import TrainEpisodeSampler, walk_episodes
from fsdino.data.pascal import PascalVOC
from fsdino.data.transforms import EvalTransform, TrainTransform
from fsdino.errors import InputError

SIZE = 56


@pytest.fixture(scope="module")
def synthetic_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    run(SyntheticStageConfig(out=out, num_images=40, min_size=64, max_size=80))
    return out


def test_training_items_and_batches(synthetic_stage: Path) -> None:
    split = open_split(synthetic_stage, "fold0_train")
    episodes = TrainEpisodeSampler(split.pairs, shot=2, seed=0).episodes(0)[:6]
    dataset = EpisodeDataset(split.source, episodes, TrainTransform(SIZE), training=True)
    item = dataset[0]
    assert item["query_image"].shape == (3, SIZE, SIZE) and item["query_mask"].shape == (SIZE, SIZE)
    assert item["support_images"].shape == (2, 3, SIZE, SIZE) and item["support_masks"].shape == (2, SIZE, SIZE)
    assert item["class_id"] in range(6, 21) and "query_mask_original" not in item
    batch = next(iter(make_loader(dataset, batch_size=3)))
    assert batch["support_images"].shape == (3, 2, 3, SIZE, SIZE) and batch["class_id"].shape == (3,)
    assert batch["query_id"] == [episode.query_id for episode in episodes[:3]]


def test_items_do_not_depend_on_workers(synthetic_stage: Path) -> None:
    split = open_split(synthetic_stage, "fold1_train")
    episodes = TrainEpisodeSampler(split.pairs, shot=1, seed=1).episodes(3)[:8]
    dataset = EpisodeDataset(split.source, episodes, TrainTransform(SIZE), training=True, seed=1, epoch=3)
    batches = [list(make_loader(dataset, batch_size=2, num_workers=workers)) for workers in (0, 2)]
    for single, parallel in zip(*batches, strict=True):
        assert single["query_id"] == parallel["query_id"] and single["support_ids"] == parallel["support_ids"]
        for key in ("query_image", "query_mask", "support_images", "support_masks"):
            assert torch.equal(single[key], parallel[key])


def test_evaluation_keeps_the_original_mask(synthetic_stage: Path) -> None:
    split = open_split(synthetic_stage, "fold2_val")
    episodes = evaluation_episodes(split, shot=1, num_episodes=5)
    assert episodes == evaluation_episodes(open_split(synthetic_stage, "fold2_val"), shot=1, num_episodes=5)
    dataset = EpisodeDataset(split.source, episodes, EvalTransform(SIZE), training=False)
    item = dataset[0]
    original = item["query_mask_original"]
    index = split.source.index_of(episodes[0].query_id)
    assert original.shape == split.source.load_image(index).shape[:2] and original.dtype == torch.int64
    assert set(original.unique().tolist()) <= {0, 1, 255} and (original == 1).any()
    batch = next(iter(make_loader(dataset, batch_size=2)))
    assert isinstance(batch["query_mask_original"], list) and len(batch["query_mask_original"]) == 2


def _corrupt(voc_root: Path, name: str) -> Path:
    path = voc_root / "VOC2012" / "JPEGImages" / f"{name}.jpg"
    path.write_bytes(path.read_bytes()[:40])
    return path


def test_unreadable_image_is_skipped_in_training(voc_root: Path) -> None:
    _corrupt(voc_root, "2008_000001")
    source = PascalVOC(voc_root)
    pairs = [("2008_000001", 2), ("2008_000003", 2), ("2008_000006", 2)]
    episodes = walk_episodes(pairs, shot=1, num_episodes=3)
    dataset = EpisodeDataset(source, episodes, TrainTransform(SIZE), training=True)
    with pytest.warns(RuntimeWarning, match=r"2008_000001\.jpg"):
        item = dataset[0]
    assert "2008_000001" not in (item["query_id"], *item["support_ids"])


def test_unreadable_image_is_an_error_in_evaluation(voc_root: Path) -> None:
    _corrupt(voc_root, "2008_000001")
    source = PascalVOC(voc_root)
    episodes = walk_episodes([("2008_000001", 2), ("2008_000003", 2)], shot=1, num_episodes=1)
    dataset = EpisodeDataset(source, episodes, EvalTransform(SIZE), training=False)
    with pytest.raises(InputError, match=r"2008_000001\.jpg: cannot read the file"):
        dataset[0]
