"""The ``report`` section of ``params.yaml`` (a light module: loading the params must not import the
dashboard's pandas and matplotlib)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ReportConfig(BaseModel):
    """The ``report`` section of ``params.yaml``."""

    model_config = ConfigDict(extra="forbid")

    outputs_dir: Path = Field(default=Path("outputs"), description="folder holding the stages' artifacts")
    out: Path = Field(default=Path("outputs/report/index.html"), description="the HTML file to write")
    title: str = Field(default="FS-DINO: few-shot segmentation results", min_length=1, description="page title")
    overlays_per_run: int = Field(default=4, ge=0, description="qualitative panels shown per variant/fold/shot")
    overlay_max_width: int = Field(default=900, ge=64, description="wider overlay PNGs are downscaled to this")
