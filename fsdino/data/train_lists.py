"""HDMNet's training-list filters: which base-class (image, class) pairs a fold may train on.

HDMNet builds its training lists (``util/dataset.py``, ``make_dataset`` with ``filter_intersection``)
from PFENet's rule, after Shaban et al.'s OSLSM:

* an image holding any pixel of a novel class of the fold is left out entirely (``exclude_novel``),
  so that novel objects never appear as background during meta-training;
* a class of an image is a pair only when it covers at least 2·32·32 = 2,048 pixels of the image's
  mask (``min_object_pixels``; OSLSM keeps a mask that still has more than 2 pixels at 1/32 scale). The
  count is the class's pixels in the image (all its objects together), not one instance's;
* an image with no pair left is not in the list.

Without either rule a list holds every (image, base class) pair with at least one pixel (HSNet's).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from pydantic import BaseModel, ConfigDict, Field

from fsdino.data.base import SegmentationSource
from fsdino.data.splits import Pair

#: HDMNet's (PFENet's) smallest training object, in pixels of the original mask.
HDMNET_MIN_OBJECT_PIXELS = 2 * 32 * 32


class TrainListRule(BaseModel):
    """Which training pairs to keep (module docstring); the defaults keep them all (HSNet's lists)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude_novel: bool = Field(default=False, description="drop training images holding a novel class (HDMNet)")
    min_object_pixels: int = Field(
        default=0, ge=0, description="smallest class area kept as a training pair, in pixels (HDMNet: 2048)"
    )

    @property
    def keeps_all(self) -> bool:
        return not self.exclude_novel and self.min_object_pixels == 0


def filter_train_pairs(
    pairs: Iterable[Pair], source: SegmentationSource, novel: Collection[int], rule: TrainListRule
) -> list[Pair]:
    """The ``pairs`` (image id, base class) of ``source`` that ``rule`` keeps, in their order.

    Args:
        pairs: a fold's training pairs, every image in ``source``.
        source: where the images' classes and class areas are read (``classes_in``, ``class_pixels``).
        novel: the fold's novel class ids.
        rule: what to drop.
    """
    if rule.keeps_all:
        return list(pairs)
    novel = set(novel)
    kept = []
    for image_id, class_id in pairs:
        index = source.index_of(image_id)
        if rule.exclude_novel and novel.intersection(source.classes_in(index)):
            continue
        if rule.min_object_pixels and source.class_pixels(index).get(class_id, 0) < rule.min_object_pixels:
            continue
        kept.append((image_id, class_id))
    return kept
