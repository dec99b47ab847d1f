"""The root of ``params.yaml``: every section validated by the pydantic model of the step that reads it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from components.params import DEFAULT_PARAMS, read_yaml, validate
from fsdino.config import ModelConfig


class Params(BaseModel):
    """The whole ``params.yaml``; unknown sections or keys are errors."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "demo"
    model: ModelConfig = ModelConfig()


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    return validate(Params, read_yaml(path), str(path))
