"""A torch ``Dataset`` of few-shot episodes and the DataLoader factory.

Each item is a dict of tensors (S = the transform's size, K = shots)::

    query_image    3×S×S float32 in [0, 1]      support_images  K×3×S×S float32
    query_mask     S×S int64 {0, 1, 255}         support_masks   K×S×S int64
    class_id       int                            query_id, support_ids
    query_mask_original  H×W int64 (evaluation only: the mask at the image's own size, for scoring)

A batch stacks the tensors (B×…) and keeps ids and original-size masks as lists. Randomness (training
augmentation) comes from ``default_rng([seed, epoch, index])``, so an item is the same whatever the
number of workers. An unreadable file is skipped with a warning naming it during training (the next
episode is used instead) and is an :class:`InputError` naming it during evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fsdino.data.base import SegmentationSource
from fsdino.data.episodes import Episode
from fsdino.data.imageio import CorruptFileError
from fsdino.errors import InputError

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]

#: How many consecutive episodes training skips before giving up on unreadable files.
MAX_SKIPS = 16


class EpisodeDataset(Dataset):
    """Episodes of one source, loaded and transformed on access.

    Args:
        source: where images and masks come from.
        episodes: the episode list (drawn up front, see ``fsdino.data.episodes``).
        transform: ``TrainTransform`` or ``EvalTransform`` (applied to query and supports alike).
        training: skip unreadable files with a warning instead of raising; no original-size mask.
        seed, epoch: seed the per-item random generator.
    """

    def __init__(
        self,
        source: SegmentationSource,
        episodes: Sequence[Episode],
        transform: Transform,
        *,
        training: bool,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        self.source, self.episodes, self.transform = source, list(episodes), transform
        self.training, self.seed, self.epoch = training, seed, epoch

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.training:
            return self._load(index)
        for offset in range(MAX_SKIPS):
            episode_index = (index + offset) % len(self.episodes)
            try:
                return self._load(episode_index)
            except CorruptFileError as error:
                warnings.warn(f"skipping episode {episode_index}: {error}", RuntimeWarning, stacklevel=2)
        raise InputError(f"{MAX_SKIPS} consecutive episodes from {index} hold unreadable files; see the warnings")

    def _load(self, index: int) -> dict[str, Any]:
        episode = self.episodes[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        query_index = self.source.index_of(episode.query_id)
        query_image, query_mask = self.source.load_pair(query_index, episode.class_id)
        query_image_tensor, query_mask_tensor = self.transform(query_image, query_mask, rng)
        support_images, support_masks = [], []
        for support_id in episode.support_ids:
            image, mask = self.source.load_pair(self.source.index_of(support_id), episode.class_id)
            image_tensor, mask_tensor = self.transform(image, mask, rng)
            support_images.append(image_tensor)
            support_masks.append(mask_tensor)
        item = {
            "query_image": query_image_tensor,
            "query_mask": query_mask_tensor,
            "support_images": torch.stack(support_images),
            "support_masks": torch.stack(support_masks),
            "class_id": episode.class_id,
            "query_id": episode.query_id,
            "support_ids": episode.support_ids,
            "index": index,
        }
        if not self.training:
            item["query_mask_original"] = torch.tensor(query_mask, dtype=torch.long)
        return item


def collate_episodes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-size tensors into B×…; ids and original-size masks stay lists; class_id → B int64."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key == "query_mask_original" or not isinstance(values[0], torch.Tensor):
            batch[key] = torch.tensor(values) if key in ("class_id", "index") else values
        else:
            batch[key] = torch.stack(values)
    return batch


def make_loader(
    dataset: EpisodeDataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    batches: Sequence[Sequence[int]] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` in episode order (the order is the sampler's, already random).

    ``batches`` replaces the consecutive batches of ``batch_size`` by an explicit list (e.g. one that keeps
    the objects of a video frame together). With ``world_size`` > 1 it yields rank ``rank``'s share of the
    one-process batches: batches ``rank``, ``rank + W``, … of that list. Every batch therefore holds
    exactly the episodes it holds in a one-process run (the same tensor shapes, so the same predictions
    bit for bit), no episode is seen twice, and a rank may get one batch fewer.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if batches is None:
        plan = rank_batches(len(dataset), batch_size, rank, world_size, drop_last=drop_last)
    else:
        plan = [list(batch) for batch in batches][rank::world_size]
    return DataLoader(
        dataset, batch_sampler=plan, num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate_episodes,
        persistent_workers=False,
    )  # fmt: skip


def grouped_batches(keys: Sequence[str], batch_size: int) -> list[list[int]]:
    """Batches of consecutive items that never split a run of equal ``keys`` (e.g. the episodes of one
    query frame, one per object): runs are packed in order while they fit ``batch_size``; a run longer
    than that is a batch of its own. With all keys distinct these are the consecutive batches."""
    batches: list[list[int]] = []
    current: list[int] = []
    index = 0
    while index < len(keys):
        end = index + 1
        while end < len(keys) and keys[end] == keys[index]:
            end += 1
        run = list(range(index, end))
        if current and len(current) + len(run) > batch_size:
            batches.append(current)
            current = []
        current += run
        index = end
    if current:
        batches.append(current)
    return batches


def rank_batches(
    num_items: int, batch_size: int, rank: int, world_size: int, *, drop_last: bool = False
) -> list[list[int]]:
    """Items ``0..num_items-1`` in batches of ``batch_size`` (the last one short unless ``drop_last``), then
    every ``world_size``-th batch from ``rank``: ``rank_batches(10, 4, 1, 2) == [[4, 5, 6, 7]]``."""
    stop = num_items - num_items % batch_size if drop_last else num_items
    batches = [list(range(start, min(start + batch_size, stop))) for start in range(0, stop, batch_size)]
    return batches[rank::world_size]
