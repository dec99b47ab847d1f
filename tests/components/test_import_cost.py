"""The pipeline steps import only what they use: the staging steps never load torch, timm or MLflow's
store before their work (each of the demo's 34 stages is a fresh process; docs/pipeline.md "Start-up")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "segment_anything", "mlflow", "pandas", "matplotlib")


def imported_after(module: str) -> set[str]:
    """The heavy top-level packages in ``sys.modules`` after ``import module`` in a fresh interpreter."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.splitlines()[-1])) & set(HEAVY)


@pytest.mark.parametrize(
    "module",
    [
        "components.config",
        "components.weights",
        "components.stage_benchmark",
        "components.stage_sa1b",
        "components.stage_crossdomain",
        "fsdino.data.sa1b",
        "fsdino.data.transforms",
        "fsdino.training.config",
    ],
)
def test_staging_steps_and_the_params_models_load_no_heavy_package(module):
    assert imported_after(module) == set()


def test_the_model_steps_still_get_what_they_run():
    assert {"torch", "timm", "segment_anything"} <= imported_after("components.train")
