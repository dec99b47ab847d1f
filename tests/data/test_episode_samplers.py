"""Episode samplers: seeded, drawn up front, supports of the query's class and never the query."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from fsdino.data import episodes as ep
from fsdino.errors import InputError

PAIRS = [(f"img{index:03d}", 1 + index % 3) for index in range(30)] + [("img100", 2), ("lonely", 9)]


@pytest.mark.parametrize("shot", [1, 5])
def test_walk_follows_the_list_in_order(shot: int) -> None:
    episodes = ep.walk_episodes(PAIRS, shot, num_episodes=100, seed=0)
    usable = PAIRS[:-1]  # class 9 has one image: no support possible
    assert [(e.query_id, e.class_id) for e in episodes] == [usable[i % len(usable)] for i in range(100)]
    for episode in episodes:
        images_of_class = {image for image, class_id in PAIRS if class_id == episode.class_id}
        assert len(episode.support_ids) == shot and episode.query_id not in episode.support_ids
        assert set(episode.support_ids) <= images_of_class and len(set(episode.support_ids)) == shot


def test_samplers_are_identical_for_the_same_seed() -> None:
    assert ep.walk_episodes(PAIRS, 5, 1000, seed=3) == ep.walk_episodes(list(PAIRS), 5, 1000, seed=3)
    assert ep.walk_episodes(PAIRS, 5, 1000, seed=3) != ep.walk_episodes(PAIRS, 5, 1000, seed=4)
    first, second = ep.class_uniform_episodes(PAIRS, 1, 500, seed=0), ep.class_uniform_episodes(PAIRS, 1, 500, seed=0)
    assert first == second


def test_class_uniform_draws_classes_evenly() -> None:
    skewed = [(f"a{index}", 1) for index in range(200)] + [("b0", 2), ("b1", 2)]
    counts = Counter(episode.class_id for episode in ep.class_uniform_episodes(skewed, 1, 2000, seed=0))
    assert set(counts) == {1, 2} and abs(counts[1] - counts[2]) < 200
    assert all(e.support_ids != (e.query_id,) for e in ep.class_uniform_episodes(skewed, 1, 2000, seed=0))


def test_every_query_once_and_replacement_when_few_images() -> None:
    episodes = ep.every_query_episodes(PAIRS, shot=5, seed=0)
    assert [(e.query_id, e.class_id) for e in episodes] == PAIRS[:-1]
    small = ep.every_query_episodes([("x", 1), ("y", 1)], shot=3)
    assert small[0].support_ids == ("y", "y", "y") and small[1].support_ids == ("x", "x", "x")


def test_train_sampler_epochs_permute_the_pairs() -> None:
    sampler = ep.TrainEpisodeSampler(PAIRS, shot=1, seed=7)
    epoch0, epoch1 = sampler.episodes(0), sampler.episodes(1)
    assert len(epoch0) == len(PAIRS) - 1 and sorted(e[:2] for e in epoch0) == sorted(PAIRS[:-1])
    assert epoch0 != epoch1 and epoch0 == ep.TrainEpisodeSampler(PAIRS, shot=1, seed=7).episodes(0)
    assert len(ep.TrainEpisodeSampler(PAIRS, shot=2, episodes_per_epoch=70).episodes(0)) == 70


def test_an_hdmnet_epoch_is_every_image_once_with_a_random_class_of_it() -> None:
    # HDMNet's fold-0 list of the sized mini VOC (tests/data/test_train_lists.py); classes 7 and 9 have one
    # image each, so no episode: 5 usable pairs on 4 images, 2009_000006 holding classes 6 and 8
    hdmnet_list = [
        ("2009_000001", 6), ("2009_000004", 8), ("2009_000005", 6), ("2009_000006", 6), ("2009_000006", 8),
        ("2009_000007", 7), ("2009_000007", 9),
    ]  # fmt: skip
    by_pairs = ep.TrainEpisodeSampler(hdmnet_list, shot=1, seed=0)
    assert len(by_pairs) == 5 and sorted(e[:2] for e in by_pairs.episodes(0)) == hdmnet_list[:5]
    by_images = ep.TrainEpisodeSampler(hdmnet_list, shot=1, seed=0, unit="images")
    assert len(by_images) == 4
    classes_of_000006 = set()
    for epoch in range(12):
        episodes = by_images.episodes(epoch)
        assert sorted(e.query_id for e in episodes) == ["2009_000001", "2009_000004", "2009_000005", "2009_000006"]
        assert all((e.query_id, e.class_id) in hdmnet_list and e.query_id not in e.support_ids for e in episodes)
        classes_of_000006 |= {e.class_id for e in episodes if e.query_id == "2009_000006"}
        assert episodes == ep.TrainEpisodeSampler(hdmnet_list, shot=1, seed=0, unit="images").episodes(epoch)
    assert classes_of_000006 == {6, 8}
    assert len(ep.TrainEpisodeSampler(hdmnet_list, 2, episodes_per_epoch=10, unit="images").episodes(1)) == 10
    with pytest.raises(InputError, match="epoch unit: expected 'pairs' or 'images'"):
        ep.TrainEpisodeSampler(hdmnet_list, 1, unit="objects")  # type: ignore[arg-type]


def test_episode_files_round_trip(tmp_path: Path) -> None:
    episodes = ep.walk_episodes(PAIRS, 2, 10)
    ep.write_episodes(tmp_path / "episodes.txt", episodes)
    assert ep.read_episodes(tmp_path / "episodes.txt") == episodes


def test_impossible_episodes_are_input_errors() -> None:
    with pytest.raises(InputError, match="two images"):
        ep.walk_episodes([("a", 1), ("b", 2)], 1)
    with pytest.raises(InputError, match="shot"):
        ep.walk_episodes(PAIRS, 0)
