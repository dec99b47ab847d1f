"""Typed configuration of the FS-DINO model.

These pydantic models describe *what* to build; :mod:`fsdino.models.build` builds it. They never read
files: the pipeline (``components/params.py``) loads ``params.yaml`` into them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PATCH_SIZE = 14

EncoderName = Literal["vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2"]
Variant = Literal["ba_pcs", "ba_svp_pcs", "full"]
#: How a K-shot episode is predicted: the model's own fusion of the K supports, or HSNet's vote
#: (:mod:`fsdino.evaluation.voting`).
ShotFusion = Literal["model", "vote"]

#: Official SAM checkpoints (segment-anything README) with their sha256 and size in bytes.
SAM_CHECKPOINTS: dict[str, dict[str, str | int | None]] = {
    "vit_h": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "sha256": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        "size": 2564550879,
    },
    "vit_l": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "sha256": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        "size": None,  # not published; the sha256 is what is checked
    },
    "vit_b": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "sha256": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        "size": 375042383,
    },
}

#: Official DINOv2 backbone checkpoints (facebookresearch/dinov2 README). Meta publishes no checksums
#: for them; a profile may pin one (``encoder.sha256``) and DVC records the md5 of what it fetched.
DINOV2_CHECKPOINT_URLS: dict[str, str] = {
    "vit_small_patch14_dinov2": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    "vit_base_patch14_dinov2": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
    "vit_large_patch14_dinov2": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
}

_SHA256_PATTERN = r"^[0-9a-f]{64}$"


class EncoderConfig(BaseModel):
    """The frozen DINOv2 encoder.

    ``weights`` is ``"hub"`` (timm's pretrained ``.lvd142m`` weights from the Hugging Face hub),
    ``"random"`` (no pretrained weights: tests, CPU demo) or the path of an official DINOv2 ``.pth``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: EncoderName = "vit_base_patch14_dinov2"
    weights: str = "hub"
    sha256: str | None = Field(default=None, pattern=_SHA256_PATTERN)

    @field_validator("weights")
    @classmethod
    def _weights_kind(cls, value: str) -> str:
        if value in ("hub", "random") or value.endswith((".pth", ".pt")):
            return value
        raise ValueError(f"expected 'hub', 'random' or a path to a DINOv2 .pth file, got {value!r}")


class CorrelationConfig(BaseModel):
    """Widths of the 4D correlation module (§3.4.1): the paper's 1×1 reduction to 512 channels and the
    upsampling convolutions (256, 128, 64) at 518 px. Smaller grids (the CPU demo's 8×8 has 64 support
    positions, not 1369) may use narrower ones; ``fsdino info`` prints the resulting size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_dim: int = Field(default=512, ge=1)
    up_dims: tuple[int, int, int] = (256, 128, 64)


class ModelConfig(BaseModel):
    """Everything needed to rebuild an FS-DINO network (stored inside every checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Variant = "full"
    encoder: EncoderConfig = EncoderConfig()
    image_size: int = Field(default=518, gt=0)
    correlation: CorrelationConfig = CorrelationConfig()
    sam_checkpoint: Path | None = None
    sam_checkpoint_sha256: str | None = Field(default=str(SAM_CHECKPOINTS["vit_h"]["sha256"]), pattern=_SHA256_PATTERN)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_patch(cls, value: int) -> int:
        if value % PATCH_SIZE:
            raise ValueError(f"expected a multiple of the patch size {PATCH_SIZE} (e.g. 224, 518), got {value}")
        return value

    @property
    def grid_size(self) -> int:
        """Side of the square patch grid (37 at 518 px)."""
        return self.image_size // PATCH_SIZE


TeacherArch = Literal["vit_h", "vit_l", "vit_b", "tiny"]


class TeacherConfig(BaseModel):
    """SAM's image encoder used as the distillation teacher (paper: ViT-H from the official checkpoint).

    ``checkpoint`` is an official SAM ``.pth`` (its ``image_encoder.*`` weights are used); ``None`` builds
    a randomly initialised teacher (seeded), which only the CPU demo and the tests use.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: TeacherArch = "vit_h"
    image_size: int = Field(default=1024, gt=0)
    checkpoint: Path | None = None
    sha256: str | None = Field(default=str(SAM_CHECKPOINTS["vit_h"]["sha256"]), pattern=_SHA256_PATTERN)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"expected a multiple of SAM's patch size 16 (e.g. 1024), got {value}")
        return value
