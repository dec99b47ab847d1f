"""Few-shot episodes: (query image, class, K support images of that class), drawn up front.

Every sampler draws its whole list from ``numpy.random.default_rng`` seeded by the caller before any
loading starts, so the episodes do not depend on DataLoader workers or on the machine. Supports are
drawn from the same split as the query, never equal to it, distinct when the class has at least K other
images (with replacement otherwise). A class with a single image cannot form an episode; its pairs are
left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from fsdino.data.imageio import write_text_atomic
from fsdino.data.splits import Pair, group_by_class
from fsdino.errors import InputError


class Episode(NamedTuple):
    query_id: str
    class_id: int
    support_ids: tuple[str, ...]


class _ClassImages:
    """Per class: its images and each image's position, for drawing supports other than the query."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.images = {class_id: images for class_id, images in group_by_class(pairs).items() if len(images) > 1}
        self.position = {
            class_id: {image_id: position for position, image_id in enumerate(images)}
            for class_id, images in self.images.items()
        }
        if not self.images:
            raise InputError("split: no class has two images or more (an episode needs a query and a support)")

    def usable(self, pairs: Sequence[Pair]) -> list[Pair]:
        return [pair for pair in pairs if pair[1] in self.images]

    def supports(self, rng: np.random.Generator, query_id: str, class_id: int, shot: int) -> tuple[str, ...]:
        images = self.images[class_id]
        query_position = self.position[class_id][query_id]
        others = len(images) - 1
        picks = rng.choice(others, size=shot, replace=others < shot)
        return tuple(images[int(pick) + (int(pick) >= query_position)] for pick in picks)


def _check_shot(shot: int) -> None:
    if shot < 1:
        raise InputError(f"shot: expected at least 1, got {shot}")


def walk_episodes(pairs: Sequence[Pair], shot: int, num_episodes: int = 1000, seed: int = 0) -> list[Episode]:
    """PASCAL-5i test episodes: episode i queries ``pairs[i % len(pairs)]`` (the list in order)."""
    _check_shot(shot)
    classes = _ClassImages(pairs)
    usable = classes.usable(pairs)
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(num_episodes):
        query_id, class_id = usable[index % len(usable)]
        episodes.append(Episode(query_id, class_id, classes.supports(rng, query_id, class_id, shot)))
    return episodes


def class_uniform_episodes(pairs: Sequence[Pair], shot: int, num_episodes: int = 1000, seed: int = 0) -> list[Episode]:
    """COCO-20i test episodes: a class uniformly, then a query of it uniformly, then its supports."""
    _check_shot(shot)
    classes = _ClassImages(pairs)
    class_ids = sorted(classes.images)
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(num_episodes):
        class_id = class_ids[int(rng.integers(len(class_ids)))]
        images = classes.images[class_id]
        query_id = images[int(rng.integers(len(images)))]
        episodes.append(Episode(query_id, class_id, classes.supports(rng, query_id, class_id, shot)))
    return episodes


def every_query_episodes(pairs: Sequence[Pair], shot: int, seed: int = 0) -> list[Episode]:
    """FSS-1000 test episodes: every pair is the query once, in list order."""
    _check_shot(shot)
    classes = _ClassImages(pairs)
    rng = np.random.default_rng(seed)
    return [
        Episode(query_id, class_id, classes.supports(rng, query_id, class_id, shot))
        for query_id, class_id in classes.usable(pairs)
    ]


#: What one training epoch walks once: every (image, class) pair (HSNet's) or every image (HDMNet's).
EpochUnit = Literal["pairs", "images"]


class TrainEpisodeSampler:
    """Training episodes over the base-class pairs: each epoch is a seeded permutation of the queries (or
    ``episodes_per_epoch`` of them, cycling), each with fresh random supports.

    Args:
        pairs: the fold's train (image, base class) pairs.
        shot: K supports per episode.
        seed: base seed; epoch e draws from ``default_rng([seed, e])``.
        episodes_per_epoch: default: one episode per query unit.
        unit: ``"pairs"``: every usable pair is a query once per epoch (HSNet); ``"images"``: every image
            with a usable pair is a query once, its class drawn uniformly among its pairs (HDMNet's
            ``SemData``: one item per image of the list, a random class of it).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        shot: int,
        seed: int = 0,
        episodes_per_epoch: int | None = None,
        unit: EpochUnit = "pairs",
    ) -> None:
        _check_shot(shot)
        if unit not in ("pairs", "images"):
            raise InputError(f"epoch unit: expected 'pairs' or 'images', got {unit!r}")
        self.classes = _ClassImages(pairs)
        self.pairs = self.classes.usable(pairs)
        self.shot, self.seed, self.unit = shot, seed, unit
        self.image_classes: dict[str, list[int]] = {}
        for image_id, class_id in self.pairs:
            self.image_classes.setdefault(image_id, []).append(class_id)
        self.images = list(self.image_classes)
        units = len(self.pairs) if unit == "pairs" else len(self.images)
        self.episodes_per_epoch = episodes_per_epoch or units

    def __len__(self) -> int:
        return self.episodes_per_epoch

    def _queries(self, rng: np.random.Generator) -> list[Pair]:
        """One epoch's (query, class) list: a permutation of the units, repeated to ``episodes_per_epoch``."""
        units = len(self.pairs) if self.unit == "pairs" else len(self.images)
        repeats = -(-self.episodes_per_epoch // units)
        order = np.concatenate([rng.permutation(units) for _ in range(repeats)])[: self.episodes_per_epoch]
        if self.unit == "pairs":
            return [self.pairs[int(position)] for position in order]
        queries = []
        for position in order:
            image_id = self.images[int(position)]
            classes = self.image_classes[image_id]
            queries.append((image_id, classes[int(rng.integers(len(classes)))]))
        return queries

    def episodes(self, epoch: int) -> list[Episode]:
        rng = np.random.default_rng([self.seed, epoch])
        return [
            Episode(query_id, class_id, self.classes.supports(rng, query_id, class_id, self.shot))
            for query_id, class_id in self._queries(rng)
        ]


def format_episodes(episodes: Sequence[Episode]) -> str:
    """One episode a line: ``<query> <class> <support>,<support>,…``."""
    return "".join(f"{e.query_id} {e.class_id} {','.join(e.support_ids)}\n" for e in episodes)


def write_episodes(path: Path | str, episodes: Sequence[Episode]) -> None:
    write_text_atomic(path, format_episodes(episodes))


def read_episodes(path: Path | str) -> list[Episode]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: episode file not found")
    episodes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if len(fields) != 3 or not fields[1].isdigit():
            raise InputError(f"{path}:{number}: expected '<query> <class> <support>,…', got {line!r}")
        episodes.append(Episode(fields[0], int(fields[1]), tuple(fields[2].split(","))))
    return episodes
