"""Opening the staged few-shot benchmark for one fold: splits, episodes and datasets (shared by the train
and evaluate steps, so that both see exactly the same episodes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fsdino.data.benchmark import Split, evaluation_episodes, open_split, read_manifest
from fsdino.data.dataset import EpisodeDataset
from fsdino.data.episodes import Episode, EpochUnit, TrainEpisodeSampler
from fsdino.data.transforms import EvalTransform, TrainTransform
from fsdino.errors import InputError


@dataclass(frozen=True)
class FoldData:
    """A staged benchmark's fold: base-class training pairs and novel-class test pairs."""

    train: Split
    test: Split
    class_names: dict[int, str]
    novel_classes: tuple[int, ...]

    @classmethod
    def open(cls, stage_dir: Path, fold: int) -> FoldData:
        manifest = read_manifest(stage_dir)
        folds = manifest.get("folds", {})
        if str(fold) not in folds:
            raise InputError(f"{stage_dir}/manifest.json: no fold {fold} (staged folds: {', '.join(folds) or 'none'})")
        names = {int(k): str(v) for k, v in manifest.get("classes", {}).items()}
        novel = tuple(int(c) for c in folds[str(fold)]["novel"])
        return cls(open_split(stage_dir, f"fold{fold}_train"), open_split(stage_dir, f"fold{fold}_val"), names, novel)

    def keep_decoded(self, max_pairs: int) -> FoldData:
        """Keep up to ``max_pairs`` decoded pairs of each split in memory (``train.keep_decoded``)."""
        self.train.source.keep_decoded(max_pairs)
        self.test.source.keep_decoded(max_pairs)
        return self

    def test_episodes(self, shot: int, count: int, seed: int) -> list[Episode]:
        """The fold's fixed test episodes (the standard protocol: fixed seed and count)."""
        return evaluation_episodes(self.test, shot, count, seed)

    def test_dataset(self, episodes: list[Episode], image_size: int) -> EpisodeDataset:
        return EpisodeDataset(self.test.source, episodes, EvalTransform(image_size), training=False)

    def train_sampler(
        self, shot: int, seed: int, episodes_per_epoch: int | None, unit: EpochUnit = "pairs"
    ) -> TrainEpisodeSampler:
        return TrainEpisodeSampler(self.train.pairs, shot, seed=seed, episodes_per_epoch=episodes_per_epoch, unit=unit)

    def train_dataset(
        self, sampler: TrainEpisodeSampler, epoch: int, transform: TrainTransform, seed: int
    ) -> EpisodeDataset:
        episodes = sampler.episodes(epoch)
        return EpisodeDataset(self.train.source, episodes, transform, training=True, seed=seed, epoch=epoch)

    def base_episodes_for_tuning(self, shot: int, image_size: int, count: int, seed: int) -> EpisodeDataset:
        """Base-class episodes without augmentation, for tuning the baseline's threshold (never novel classes)."""
        episodes = self.train_sampler(shot, seed, count).episodes(0)
        return EpisodeDataset(self.train.source, episodes, EvalTransform(image_size), training=False)
