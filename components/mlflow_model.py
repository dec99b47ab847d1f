"""FS-DINO as an MLflow pyfunc model, rebuilt from an FS-DINO checkpoint (state dict + config, no pickle).

The model is logged as *code* (MLflow's models-from-code): :func:`log_fsdino_model` logs this very file,
a copy of the ``fsdino`` package (``code_paths``) and the checkpoint as an artifact; at load time MLflow
executes this file, whose last line hands it an :class:`FSDINOPyfunc`, and calls ``load_context``. So
this module imports nothing from ``components`` and nothing here is pickled.

Input, a dict of tensors (MLflow tensor signature; over REST ``{"inputs": {...}, "params": {...}}``):

* ``support_images``: K×H×W×3 uint8, the labelled examples (all of one size),
* ``support_masks``: K×H×W uint8, 1 = the class, 0 = background (255 = ignore, counted as background),
* ``query_images``: Q×H'×W'×3 uint8, the images to segment (all of one size, may differ from H×W).

Param ``threshold`` (float, default 0.5) on the foreground probability. Output: Q×H'×W' uint8 masks in
{0, 1}, at the queries' size.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec

import fsdino
from fsdino.checkpoints import check_state_matches, read_checkpoint, segmenter_state
from fsdino.errors import InputError
from fsdino.inference import Segmenter
from fsdino.models.build import build_fsdino, load_fsdino
from fsdino.models.fsdino import FSDINO

CHECKPOINT_ARTIFACT = "checkpoint"
#: Logged only when the checkpoint's encoder weights are a local ``.pth`` (the server would not have it).
ENCODER_ARTIFACT = "encoder_weights"
DEFAULT_THRESHOLD = 0.5

#: The part of the ``fsdino`` package that rebuilding and running the model imports: shipped with the
#: model. A served model imports ``fsdino`` from this copy only, so a missing part fails loudly.
SERVED_PACKAGE_PARTS = ("__init__.py", "errors.py", "config.py", "checkpoints.py", "inference.py", "models")

#: Distributions the served model imports (pinned to the logging environment's versions).
SERVING_DISTRIBUTIONS = ("mlflow", "torch", "torchvision", "timm", "segment-anything", "numpy", "pydantic", "pillow")


def validate_episode(model_input: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a request and return (support images K×H×W×3, support masks K×H×W, queries Q×H'×W'×3).

    Raises:
        InputError: a missing key, a wrong dtype or shape, or masks that do not match their images.
    """
    if not isinstance(model_input, Mapping):
        raise InputError(
            f"expected a dict with support_images, support_masks, query_images, got {type(model_input).__name__}"
        )
    missing = [key for key in ("support_images", "support_masks", "query_images") if key not in model_input]
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)}")
    support_images = _uint8(model_input["support_images"], "support_images")
    support_masks = _uint8(model_input["support_masks"], "support_masks")
    query_images = _uint8(model_input["query_images"], "query_images")
    for key, images in (("support_images", support_images), ("query_images", query_images)):
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
            raise InputError(f"{key}: expected N×H×W×3 with N ≥ 1, got shape {images.shape}")
    if support_masks.shape != support_images.shape[:3]:
        raise InputError(f"support_masks: expected shape {support_images.shape[:3]}, got {support_masks.shape}")
    return support_images, support_masks, query_images


def _uint8(value: Any, key: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype != np.uint8:
        raise InputError(f"{key}: expected uint8, got {array.dtype}")
    return array


def load_model_artifacts(artifacts: Mapping[str, str]) -> tuple[FSDINO, int]:
    """Rebuild the network from the logged checkpoint (and encoder weights, when logged with it).

    Returns the model in eval mode on the CPU and its square input size.
    """
    checkpoint = artifacts[CHECKPOINT_ARTIFACT]
    encoder_weights = artifacts.get(ENCODER_ARTIFACT)
    if encoder_weights is None:
        model, config, _ = load_fsdino(checkpoint)
        return model, config.image_size
    # The checkpoint names the encoder .pth by its path on the training machine; use the logged copy.
    config, state, _ = read_checkpoint(checkpoint)
    encoder = config.encoder.model_copy(update={"weights": str(encoder_weights)})
    config = config.model_copy(update={"encoder": encoder})
    model = build_fsdino(config, load_sam=False)
    check_state_matches(segmenter_state(model), state, checkpoint)
    model.load_state_dict(state, strict=False)  # the frozen encoder's keys come from its own weights
    return model.eval(), config.image_size


class FSDINOPyfunc(mlflow.pyfunc.PythonModel):
    """Few-shot segmentation of a batch of queries against one support set per request."""

    # Inputs are validated against the logged tensor signature; MLflow's type-hint validation only
    # understands list[...] inputs and would warn about (and not check) this dict of tensors.
    _skip_type_hint_validation = True

    def __init__(self) -> None:
        self._model: FSDINO | None = None
        self._image_size = 0
        self._device = "cpu"

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuild the network on the device that ``model_config["device"]`` names (``"auto"``, the logged
        default: CUDA when available, else the CPU); override with ``load_model(uri, model_config=...)``."""
        device = str((context.model_config or {}).get("device", "auto"))
        self._device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        model, self._image_size = load_model_artifacts(context.artifacts)
        self._model = model.to(self._device)

    # ``model_input`` stays unannotated on purpose: MLflow derives a schema from that annotation and only
    # supports list[...] there; the dict of tensors is described by the signature instead.
    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Q×H'×W' uint8 masks in {0, 1} for ``model_input`` (see the module docstring)."""
        if self._model is None:
            raise RuntimeError("load_context() has not run")
        try:
            support_images, support_masks, query_images = validate_episode(model_input)
            threshold = float((params or {}).get("threshold", DEFAULT_THRESHOLD))
            if not 0.0 <= threshold <= 1.0:
                raise InputError(f"threshold: expected a probability in [0, 1], got {threshold}")
        except InputError as error:  # the scoring server answers 400 with this message
            raise MlflowException.invalid_parameter_value(str(error)) from error
        # A fresh Segmenter per request: the support cache is per request, the weights are shared.
        segmenter = Segmenter(self._model, self._image_size, device=self._device)
        segmenter.set_support(list(support_images), list(support_masks))
        masks = segmenter.segment(list(query_images), threshold)
        return np.stack(masks).astype(np.uint8)


def example_input(size: int = 28, shots: int = 1, queries: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny valid request: noise images with a bright square, whose masks mark the square."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, size=(shots + queries, size, size, 3), dtype=np.uint8)
    masks = np.zeros((shots + queries, size, size), dtype=np.uint8)
    low, high = size // 4, 3 * size // 4
    images[:, low:high, low:high] = (220, 180, 40)
    masks[:, low:high, low:high] = 1
    return {"support_images": images[:shots], "support_masks": masks[:shots], "query_images": images[shots:]}


def model_signature(example: Mapping[str, np.ndarray]) -> ModelSignature:
    """The signature inferred from ``example``, with batch, height and width left free (-1)."""
    query_images = example["query_images"]
    output = np.zeros(query_images.shape[:3], dtype=np.uint8)
    inferred = infer_signature(dict(example), output, params={"threshold": DEFAULT_THRESHOLD})
    return ModelSignature(_free_sizes(inferred.inputs), _free_sizes(inferred.outputs), inferred.params)


def _free_sizes(schema: Schema) -> Schema:
    specs = [TensorSpec(spec.type, (-1, -1, -1, *spec.shape[3:]), spec.name) for spec in schema.inputs]  # N×H×W(×3)
    return Schema(specs)


def pip_requirements() -> list[str]:
    """``name==version`` for each of :data:`SERVING_DISTRIBUTIONS` (local labels such as ``+cu130`` dropped)."""
    pinned = []
    for name in SERVING_DISTRIBUTIONS:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def copy_served_package(folder: Path) -> Path:
    """Copy :data:`SERVED_PACKAGE_PARTS` of the installed ``fsdino`` into ``folder/fsdino``; returns that."""
    source = Path(fsdino.__file__).parent
    target = folder / "fsdino"
    target.mkdir(parents=True)
    for part in SERVED_PACKAGE_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source / part, target / part)
    return target


def log_fsdino_model(
    checkpoint_path: Path | str, name: str = "model", registered_model_name: str | None = None
) -> ModelInfo:
    """Log an FS-DINO checkpoint as a pyfunc model to the active run (or as a run-less LoggedModel).

    The inference part of ``fsdino`` travels with the model (``code_paths``), so a server needs only the pinned
    :func:`pip_requirements`; an encoder given as a local ``.pth`` is logged too. ``"hub"`` encoder
    weights are fetched from the Hugging Face hub when the model is loaded.
    """
    checkpoint_path = Path(checkpoint_path)
    config, _, metadata = read_checkpoint(checkpoint_path)
    artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint_path)}
    if config.encoder.weights not in ("hub", "random"):
        encoder_path = Path(config.encoder.weights)
        if not encoder_path.is_file():
            raise InputError(f"{checkpoint_path}: encoder weights {encoder_path} not found (needed to serve it)")
        artifacts[ENCODER_ARTIFACT] = str(encoder_path)
    example = example_input()
    summary = {key: metadata[key] for key in ("fold", "shot", "epoch", "val_miou") if key in metadata}
    with tempfile.TemporaryDirectory(prefix="fsdino-code-") as staging:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=Path(__file__),
            artifacts=artifacts,
            code_paths=[str(copy_served_package(Path(staging)))],
            signature=model_signature(example),
            input_example=(example, {"threshold": DEFAULT_THRESHOLD}),
            pip_requirements=pip_requirements(),
            model_config={"device": "auto"},
            registered_model_name=registered_model_name,
            metadata={
                "fsdino": {
                    "variant": config.variant,
                    "image_size": config.image_size,
                    "encoder": config.encoder.name,
                    **summary,
                }
            },
        )


# Models-from-code: MLflow executes this file when loading the model and takes this object.
mlflow.models.set_model(FSDINOPyfunc())
