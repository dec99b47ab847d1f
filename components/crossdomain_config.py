"""The ``crossdomain`` section of ``params.yaml``: Table 3's out-of-distribution evaluation (paper §4.2).

One trained model (``variant``, ``fold``, one-shot; the paper's is trained on COCO-20i's base classes)
is applied without fine-tuning to FSS-1000's test classes (mIoU, every test image a query once) and to
DAVIS-17 val (J&F, the first frame's masks as supports). Each target is staged from its official
layout at ``root`` or, with ``synthetic``, from a dataset generated in that layout under
``<data_dir>/<target>/raw`` (the CPU demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.stage_davis import DavisStageConfig
from components.stage_fss import FssStageConfig
from fsdino.config import Variant
from fsdino.data.synthetic_shapes import NUM_CLASSES
from fsdino.errors import InputError

Target = Literal["fss", "davis"]
RAW = "raw"
#: Table 3 is one-shot (and DAVIS's protocol can only be: one annotated first frame).
SHOT = 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticFssParams(_Section):
    """``fsdino.data.synthetic_fss.SyntheticFssSpec``: classes × images of one centred object."""

    num_classes: int = Field(default=NUM_CLASSES, ge=5, le=NUM_CLASSES)
    images_per_class: int = Field(default=10, ge=2)
    size: int = Field(default=128, ge=32)
    seed: int = 0


class SyntheticDavisParams(_Section):
    """``fsdino.data.synthetic_davis.SyntheticDavisSpec``: short videos of gliding objects."""

    sequences: int = Field(default=6, ge=1)
    frames: int = Field(default=8, ge=3)
    height: int = Field(default=108, ge=32)
    width: int = Field(default=192, ge=32)
    max_objects: int = Field(default=3, ge=1, le=3)
    seed: int = 0


class _TargetParams(_Section):
    root: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> _TargetParams:
        synthetic = getattr(self, "synthetic", None)
        if (self.root is None) == (synthetic is None):
            got = "neither" if self.root is None else "both"
            raise ValueError(f"give exactly one of root (the official dataset) or synthetic (generated), got {got}")
        return self

    def raw_root(self, out: Path) -> Path:
        """Where the dataset in its official layout is read from (``out``: the staged folder)."""
        return out / RAW if self.root is None else self.root


class FssTargetParams(_TargetParams):
    """FSS-1000: ``root`` holds ``FSS-1000/<class>/<N>.jpg``; ``official_lists`` HSNet's class lists (default:
    ``<root>/splits/fss``), which ``require_official_lists`` makes mandatory (no fall-back to the seeded split)."""

    official_lists: Path | None = None
    require_official_lists: bool = False
    synthetic: SyntheticFssParams | None = None

    def stage_config(self, out: Path) -> FssStageConfig:
        return FssStageConfig(
            root=self.raw_root(out),
            out=out,
            official_lists=self.official_lists,
            require_official_lists=self.require_official_lists,
        )


class DavisTargetParams(_TargetParams):
    """DAVIS-17: ``root`` holds ``JPEGImages/480p``, ``Annotations/480p`` and ``ImageSets/2017``."""

    synthetic: SyntheticDavisParams | None = None

    def stage_config(self, out: Path) -> DavisStageConfig:
        return DavisStageConfig(root=self.raw_root(out), out=out)


class CrossDomainParams(_Section):
    """Which model, which targets (``dvc.yaml``'s ``crossdomain_data@T`` and ``crossdomain@T`` stages)."""

    targets: list[Target] = Field(default_factory=lambda: ["fss", "davis"])
    variant: Variant = "full"
    fold: int = Field(default=0, ge=0)
    batch_size: int = Field(default=8, ge=1)
    overlays: int = Field(default=4, ge=0)
    data_dir: Path = Path("outputs/data")
    out_dir: Path = Path("outputs/evaluate/crossdomain")  # under outputs/evaluate, which the report reads
    metrics_dir: Path = Path("outputs/metrics/crossdomain")
    fss: FssTargetParams = FssTargetParams(root=Path("data/fss"))
    davis: DavisTargetParams = DavisTargetParams(root=Path("data/DAVIS"))

    @model_validator(mode="after")
    def _distinct(self) -> CrossDomainParams:
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets: each target once, got {self.targets}")
        return self

    def target(self, name: Target) -> FssTargetParams | DavisTargetParams:
        return getattr(self, name)

    def require(self, name: str) -> None:
        """The one-line error of both cross-domain steps when ``name`` is not one of ``targets``."""
        if name not in self.targets:
            raise InputError(f"crossdomain.targets: {name!r} is not a target (targets: {self.targets})")

    def stage_dir(self, name: Target) -> Path:
        """The staged dataset of target ``name`` (``dvc.yaml``: ``${crossdomain.data_dir}/${item}``)."""
        return self.data_dir / name

    def run_dir(self, name: Target) -> Path:
        return self.out_dir / name

    def scores_path(self, name: Target) -> Path:
        """The stage's DVC metrics file (``dvc.yaml``: ``${crossdomain.metrics_dir}/${item}.json``): numbers only."""
        return self.metrics_dir / f"{name}.json"
