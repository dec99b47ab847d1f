"""The root of ``params.yaml``: every section validated by the pydantic model of the step that reads it.

Profiles: ``params.yaml`` is the default demo profile (CPU, synthetic data, small models);
``profiles/*.yaml`` hold the paper's settings and are selected with ``python -m components.profile``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.crossdomain_config import SHOT as CROSSDOMAIN_SHOT
from components.crossdomain_config import CrossDomainParams
from components.params import DEFAULT_PARAMS, read_yaml, require_sections, validate
from components.report_config import ReportConfig
from components.stage_coco import CocoStageConfig
from components.stage_pascal import PascalStageConfig
from components.stage_sa1b import StageSA1BConfig
from components.stage_synthetic import SyntheticStageConfig
from components.tracking_config import TrackingConfig
from fsdino.config import ModelConfig, ShotFusion, TeacherConfig, Variant
from fsdino.data.episodes import EpochUnit
from fsdino.data.transforms import TrainResize, TrainTransform
from fsdino.training.config import LoopConfig

BenchmarkKind = Literal["synthetic", "pascal", "coco"]
WORK_DIR = Path("outputs/.work")  # training states that survive DVC deleting a stage's outputs


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchmarkParams(_Section):
    """The few-shot benchmark of the profile; only the chosen kind's sub-section is used."""

    kind: BenchmarkKind = "synthetic"
    synthetic: SyntheticStageConfig | None = None
    pascal: PascalStageConfig | None = None
    coco: CocoStageConfig | None = None

    @model_validator(mode="after")
    def _chosen_kind_is_configured(self) -> BenchmarkParams:
        if getattr(self, self.kind) is None:
            if self.kind != "synthetic":
                raise ValueError(f"kind is {self.kind!r} but the section benchmark.{self.kind} is missing")
            self.synthetic = SyntheticStageConfig(out=Path("outputs/data/benchmark"))
        return self

    @property
    def stage(self) -> SyntheticStageConfig | PascalStageConfig | CocoStageConfig:
        return getattr(self, self.kind)

    @property
    def out(self) -> Path:
        return self.stage.out


class WeightFile(_Section):
    """One pretrained checkpoint from its official URL (sha256 checked when known)."""

    name: str
    url: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(default=None, ge=1)


class WeightsParams(_Section):
    """Pretrained weights the profile needs (the demo needs none); DVC caches ``dir``."""

    dir: Path = Path("outputs/weights")
    files: list[WeightFile] = Field(default_factory=list)
    retries: int = Field(default=3, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)


class TeacherCacheParams(_Section):
    """Where and how the teacher targets are kept (``fsdino.training.teacher_cache``; docs/pipeline.md).

    The shards live in ``dir``, outside DVC's outputs (never deleted before a re-run, never copied into
    DVC's cache); the DVC output is the small index ``<distill.out_dir>/teacher_cache.json``.
    """

    dir: Path = Path("outputs/.work/teacher_cache")
    shard_images: int = Field(default=512, ge=1, description="manifest rows per shard")
    batch_size: int = Field(default=8, ge=1, description="teacher batch size per process")
    stale_after_s: float = Field(default=600.0, gt=0, description="a claim of another host without heartbeat")
    verify: Literal["header", "checksum"] = "header"


class DistillParams(_Section):
    """Coarse-to-fine distillation (paper §3.3, §4.1): three stages at increasing resolution, each
    starting from the previous one's adapter (``dvc.yaml`` has one stage per resolution)."""

    teacher: TeacherConfig = TeacherConfig()
    image_sizes: list[int] = Field(default_factory=lambda: [126, 252, 518], min_length=3, max_length=3)
    manifest: Path = Path("outputs/data/sa1b/manifest.parquet")
    out_dir: Path = Path("outputs/distill")
    targets: Literal["cached", "online"] = "cached"
    cache: TeacherCacheParams = TeacherCacheParams()
    val_fraction: float = Field(default=0.05, gt=0, lt=0.5)
    loop: LoopConfig = LoopConfig(epochs=15, batch_size=8, lr=1e-3)

    @model_validator(mode="after")
    def _sizes(self) -> DistillParams:
        bad = [size for size in self.image_sizes if size % 14]
        if bad:
            raise ValueError(f"image_sizes: expected multiples of 14, got {bad}")
        return self

    @property
    def teacher_cache(self) -> Path:
        """The cache's index, the DVC output (the shards are under ``cache.dir``)."""
        return self.out_dir / "teacher_cache.json"

    @property
    def grids(self) -> tuple[int, ...]:
        """The student grid of each stage (image size / 14): the grids the teacher cache stores."""
        return tuple(dict.fromkeys(size // 14 for size in self.image_sizes))

    def stage_dir(self, stage: int) -> Path:
        return self.out_dir / f"stage{stage}"


class AugmentParams(_Section):
    """Training augmentation (``fsdino.data.transforms.TrainTransform``); defaults are HDMNet's (paper §4.1):
    scale, rotate, blur, flip, then a squash to the square (``resize: squash``; ``pad_crop`` is PFENet/BAM's
    pad and random crop). HDMNet's scale range is 0.9-1.1 for PASCAL-5i and 0.8-1.25 for COCO-20i.

    The CPU demo keeps only the horizontal flip, so that every training tensor is one of two views of an
    image and the frozen encoder's features can be computed once (``features.memo``).
    """

    resize: TrainResize = "squash"
    scale_range: tuple[float, float] = (0.9, 1.1)
    rotate_p: float = Field(default=0.5, ge=0, le=1)
    blur_p: float = Field(default=0.5, ge=0, le=1)
    flip_p: float = Field(default=0.5, ge=0, le=1)

    def transform(self, size: int) -> TrainTransform:
        return TrainTransform(
            size,
            resize=self.resize,
            scale_range=self.scale_range,
            rotate_p=self.rotate_p,
            blur_p=self.blur_p,
            flip_p=self.flip_p,
        )


class TrainParams(_Section):
    """Episodic training per (variant, fold, shot) (paper §3.4.3, §4.1)."""

    variants: list[Variant] = Field(default_factory=lambda: ["full"], min_length=1)
    folds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    shots: list[int] = Field(default_factory=lambda: [1, 5], min_length=1)
    init_adapter_from_distillation: bool = True
    epoch: EpochUnit = Field(
        default="pairs", description="an epoch: every (image, class) pair once (HSNet) or every image once (HDMNet)"
    )
    episodes_per_epoch: int | None = Field(default=None, ge=1)
    val_episodes: int = Field(default=100, ge=1)
    keep_decoded: int = Field(
        default=0, ge=0, description="decoded (image, mask) pairs kept in memory per split (0: decode every read)"
    )
    out_dir: Path = Path("outputs/train")
    loop: LoopConfig = LoopConfig(epochs=100, batch_size=8, lr=1e-3)
    augment: AugmentParams = AugmentParams()

    def run_dir(self, variant: str, fold: int, shot: int) -> Path:
        return self.out_dir / variant / f"fold{fold}_shot{shot}"


class AblationParams(_Section):
    """The other variants of Table 4, trained and evaluated like ``train`` on these folds and shots.

    ``dvc.yaml``'s ``ablation_train`` / ``ablation_evaluate`` stages run variants × folds × shots; the
    report puts them beside ``train.variants`` in the ablation table. No variants: no ablation stages.
    """

    variants: list[Variant] = Field(default_factory=lambda: ["ba_pcs", "ba_svp_pcs"])
    folds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    shots: list[int] = Field(default_factory=lambda: [1], min_length=1)


class FeaturesParams(_Section):
    """The frozen encoder's features, computed once by the ``features`` stage (``fsdino.models.feature_memo``).

    With ``memo`` the stage encodes every benchmark image in each view that training (flip-only
    augmentation) and evaluation feed the encoder; train and evaluate then look features up by the
    image tensor's bytes (exact), computing only what is missing. Without it the stage writes only its
    manifest and the encoder runs on every batch (the paper profiles: random scales, rotations and blur make
    every tensor new).
    """

    memo: bool = False
    out_dir: Path = Path("outputs/features")
    batch_size: int = Field(default=32, ge=1)
    max_entries: int = Field(default=20000, ge=0, description="cap of the in-process memo (entries)")

    @property
    def memo_file(self) -> Path:
        return self.out_dir / "memo.pt"

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.json"


class EvaluateParams(_Section):
    """The standard protocol (PROTOCOL-NOTES): fixed seed and episode count per fold."""

    episodes: int = Field(default=1000, ge=1)
    seed: int = 0
    resolution: Literal["original", "input"] = "original"
    shot_fusion: ShotFusion = Field(
        default="model", description="K-shot: the model's fused supports, or HSNet's vote over K one-shot passes"
    )
    batch_size: int = Field(default=8, ge=1)
    overlays: int = Field(default=4, ge=0)
    baseline: bool = True
    out_dir: Path = Path("outputs/evaluate")
    metrics_dir: Path = Path("outputs/metrics/evaluate")

    def run_dir(self, variant: str, fold: int, shot: int) -> Path:
        return self.out_dir / variant / f"fold{fold}_shot{shot}"

    def scores_path(self, variant: str, fold: int, shot: int) -> Path:
        """The stage's DVC metrics file (``dvc.yaml`` ``metrics:``, read by ``dvc metrics show``/``exp show``):
        the headline numbers only, outside ``run_dir`` because DVC outputs cannot overlap."""
        return self.metrics_dir / variant / f"fold{fold}_shot{shot}.json"


class RegisterParams(_Section):
    """Which trained model is logged to MLflow and registered; its score is the mean mIoU over the folds.

    Few-shot models are per fold (each fold trains on different base classes): the released model is the
    ``fold`` one, scored by the mean over every trained fold of its variant and shot.
    """

    variant: Variant = "full"
    shot: int = Field(default=1, ge=1)
    fold: int = Field(default=0, ge=0)
    out: Path = Path("outputs/register/model.json")
    #: Whether a ``dvc exp run`` may move the ``challenger``/``champion`` aliases (never by default: only the
    #: main reproduction, ``dvc repro`` or the Prefect flow, promotes).
    promote_experiments: bool = False


class Params(_Section):
    """The whole ``params.yaml``; unknown sections or keys are errors."""

    profile: str = "demo"
    model: ModelConfig = ModelConfig()
    benchmark: BenchmarkParams = BenchmarkParams()
    weights: WeightsParams = WeightsParams()
    stage_sa1b: StageSA1BConfig = StageSA1BConfig(output_dir=Path("outputs/data/sa1b"))
    distill: DistillParams = DistillParams()
    features: FeaturesParams = FeaturesParams()
    train: TrainParams = TrainParams()
    ablation: AblationParams = AblationParams()
    evaluate: EvaluateParams = EvaluateParams()
    crossdomain: CrossDomainParams = CrossDomainParams()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegisterParams = RegisterParams()

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.distill.image_sizes[-1] != self.model.image_size:
            raise ValueError(
                f"distill.image_sizes ends at {self.distill.image_sizes[-1]} but model.image_size is "
                f"{self.model.image_size}: the last distillation stage runs at the model's resolution"
            )
        if self.distill.manifest.parent != self.stage_sa1b.output_dir:
            raise ValueError(
                f"distill.manifest {self.distill.manifest} is not in stage_sa1b.output_dir {self.stage_sa1b.output_dir}"
            )
        chosen = self.registry
        if chosen.variant not in self.train.variants or chosen.shot not in self.train.shots:
            raise ValueError(
                f"register: ({chosen.variant}, {chosen.shot}-shot) is not trained (see train.variants/shots)"
            )
        if chosen.fold not in self.train.folds:
            raise ValueError(f"registry.fold: {chosen.fold} is not in train.folds {self.train.folds}")
        overlap = self._runs(self.train) & self._runs(self.ablation)
        if overlap:
            raise ValueError(
                f"ablation: {sorted(overlap)} are already runs of train (variant, fold, shot); give the ablation "
                "other variants"
            )
        cross = self.crossdomain
        if cross.targets and not self.trains(cross.variant, cross.fold, CROSSDOMAIN_SHOT):
            raise ValueError(
                f"crossdomain: ({cross.variant}, fold {cross.fold}, {CROSSDOMAIN_SHOT}-shot) is not a run of train or "
                "ablation (the cross-domain model must be trained)"
            )
        if self.features.memo and not self.train.augment.transform(self.model.image_size).flip_only:
            raise ValueError(
                "features.memo needs flip-only training augmentation (train.augment: scale_range [1, 1], "
                "rotate_p 0, blur_p 0): with random scales and rotations no training tensor repeats"
            )
        return self

    @staticmethod
    def _runs(section: TrainParams | AblationParams) -> set[tuple[str, int, int]]:
        return {(v, f, k) for v in section.variants for f in section.folds for k in section.shots}

    def trains(self, variant: str, fold: int, shot: int) -> bool:
        """Whether (variant, fold, shot) is one of the runs of ``train`` or ``ablation``."""
        main = variant in self.train.variants and fold in self.train.folds and shot in self.train.shots
        ablated = variant in self.ablation.variants and fold in self.ablation.folds and shot in self.ablation.shots
        return main or ablated


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """The whole params file a pipeline step reads; every section must be there (see ``require_sections``)."""
    data = read_yaml(path)
    require_sections(Params, data, str(path))
    return validate(Params, data, str(path))
