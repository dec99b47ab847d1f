"""Reading and writing weights: the only module of the library that touches weight files.

* official DINOv2 ``.pth`` backbones (converted by timm's ``checkpoint_filter_fn``),
* official SAM checkpoints, from which the mask decoder, the mask downscaling, the positional-encoding
  Gaussian matrix and the not-a-point embedding are taken by key remapping,
* FS-DINO checkpoints: ``{"format", "version", "model_config", "state_dict", "metadata"}``, written
  atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from fsdino.config import ModelConfig
from fsdino.errors import InputError
from fsdino.io.atomic import atomic_path

CHECKPOINT_FORMAT = "fsdino-checkpoint"
ADAPTER_FORMAT = "fsdino-adapter"
CHECKPOINT_VERSION = 1

#: SAM checkpoint key prefix → FS-DINO module key prefix.
SAM_KEY_MAP: dict[str, str] = {
    "mask_decoder.": "decoder.mask_decoder.",
    "prompt_encoder.mask_downscaling.": "mask_downscaling.",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": "decoder.positional_encoding.gaussian_matrix",
    "prompt_encoder.not_a_point_embed.weight": "sparse_token",
}


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> None:
    """Raise :class:`InputError` unless the file's sha256 is ``expected`` (skipped when ``None``)."""
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise InputError(f"{path}: sha256 mismatch: expected {expected}, got {actual} (corrupt or wrong file)")


def _torch_reason(error: Exception) -> str:
    """The first sentence of torch's message, unless it gives advice about ``weights_only`` (never safe to pass on)."""
    text = str(error).strip()
    first_sentence = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    if not first_sentence or "weights_only" in text:
        return f"truncated or another format: {type(error).__name__}"
    return first_sentence


def load_weights_file(path: Path | str, sha256: str | None = None) -> dict[str, Any]:
    """Load a weights file safely (``weights_only=True``) after checking it exists and its checksum."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    verify_sha256(path, sha256)
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing: the error below says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises retrying with weights_only=False, which would run code from the file: never.
        raise InputError(
            f"{path}: not a readable PyTorch weights file (expected tensors and plain containers saved with "
            "torch.save; this file is truncated, in another format, or holds other Python objects, which are "
            "never unpickled)"
        ) from error
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise InputError(
            f"{path}: not a readable PyTorch weights file ({_torch_reason(error)}; expected tensors and plain "
            "containers saved with torch.save)"
        ) from error
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a dict of tensors, got {type(loaded).__name__}")
    return loaded


def _describe_keys(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def check_state_matches(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: Path | str
) -> None:
    """Raise a one-line :class:`InputError` naming ``source`` unless ``state`` has exactly the keys and
    shapes of ``expected``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_describe_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_describe_keys(unexpected)}")
        raise InputError(f"{source}: checkpoint does not match the model: {'; '.join(parts)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(
                f"{source}: checkpoint does not match the model: {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )


def load_dinov2_backbone(vit: nn.Module, path: Path | str, sha256: str | None = None) -> None:
    """Load an official DINOv2 ``.pth`` (or a timm state dict) into a timm ViT, resampling pos-embed."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = load_weights_file(path, sha256)
    try:
        converted = checkpoint_filter_fn(state, vit)
    except Exception as error:
        raise InputError(f"{path}: not a DINOv2 backbone checkpoint ({error})") from error
    converted = {k: v for k, v in converted.items() if not k.startswith("head.")}
    check_state_matches(vit.state_dict(), converted, path)
    vit.load_state_dict(converted)


def remap_sam_state(sam_state: Mapping[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Take the decoder-side weights of an official SAM checkpoint under FS-DINO's keys.

    Keys of SAM's image encoder and of prompts FS-DINO does not use are dropped. Keys whose target the
    model does not have (``sparse_token`` outside the ``ba_pcs`` variant) are dropped too.
    """
    remapped: dict[str, torch.Tensor] = {}
    for key, value in sam_state.items():
        for source, target in SAM_KEY_MAP.items():
            if key.startswith(source):
                new_key = target + key[len(source) :]
                if new_key in target_keys:
                    remapped[new_key] = value.reshape(1, 1, -1) if new_key == "sparse_token" else value
                break
    return remapped


def load_sam_decoder(model: nn.Module, path: Path | str, sha256: str | None) -> list[str]:
    """Initialise FS-DINO's decoder side from an official SAM checkpoint; returns the keys loaded."""
    state = load_weights_file(path, sha256)
    own = model.state_dict()
    remapped = remap_sam_state(state, set(own))
    expected = {k for k in own if k.startswith(("decoder.", "mask_downscaling.")) or k == "sparse_token"}
    missing = sorted(expected - set(remapped))
    if missing:
        raise InputError(f"{path}: not a SAM checkpoint: missing {_describe_keys(missing)}")
    for key, value in remapped.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise InputError(
                f"{path}: SAM key for {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    model.load_state_dict(remapped, strict=False)
    return sorted(remapped)


def load_sam_image_encoder(encoder: nn.Module, path: Path | str, sha256: str | None) -> None:
    """Load the ``image_encoder.*`` weights of an official SAM checkpoint (the distillation teacher).

    The absolute position embedding is resized (bicubic) when the teacher runs at another input size.
    """
    state = load_weights_file(path, sha256)
    prefix = "image_encoder."
    encoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not encoder_state:
        raise InputError(f"{path}: not a SAM checkpoint: no image_encoder.* weights")
    own = encoder.state_dict()
    pos = encoder_state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape:
        grid = own["pos_embed"].shape[1:3]
        resized = torch.nn.functional.interpolate(
            pos.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False
        )
        encoder_state["pos_embed"] = resized.permute(0, 2, 3, 1)
    check_state_matches(own, encoder_state, path)
    encoder.load_state_dict(encoder_state)


def segmenter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state FS-DINO checkpoints store: everything but the frozen encoder (rebuilt from its config)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("encoder.")}


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """Write with ``torch.save`` to a temporary file beside ``path``, then rename it into place.

    ``torch.save`` is given an open file, not the temporary's path: given a path, it names the archive's
    top folder after the file, so the random temporary name would make every save's bytes differ (and DVC
    would see a changed output each time a stage reran, with equal tensors). The same object now gives the
    same bytes.
    """
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        torch.save(obj, handle)


def save_checkpoint(
    path: Path | str, model: nn.Module, config: ModelConfig, metadata: Mapping[str, Any] | None = None
) -> None:
    """Save an FS-DINO checkpoint (segmenter weights + the config that rebuilds the network)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": config.model_dump(mode="json"),
        "state_dict": segmenter_state(model),
        "metadata": dict(metadata or {}),
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: Path | str, sha256: str | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """Read and validate an FS-DINO checkpoint: (model config, segmenter state dict, metadata)."""
    payload = load_weights_file(path, sha256)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not an FS-DINO checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint version {payload.get('version')!r}, expected {CHECKPOINT_VERSION}")
    try:
        config = ModelConfig.model_validate(payload.get("model_config"))
    except ValidationError as error:
        detail = error.errors()[0]
        field = ".".join(str(part) for part in detail["loc"])
        raise InputError(f"{path}: model_config.{field}: {detail['msg']}") from error
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise InputError(f"{path}: checkpoint has no state_dict")
    return config, state, dict(payload.get("metadata") or {})


def save_adapter(path: Path | str, adapter: nn.Module, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a distilled bottleneck adapter (the distillation stages' output)."""
    payload = {
        "format": ADAPTER_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in adapter.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    atomic_torch_save(payload, path)


def load_adapter(path: Path | str, adapter: nn.Module) -> dict:
    """Load a distilled adapter into ``adapter`` (checking keys and shapes); returns its metadata."""
    payload = load_weights_file(path)
    if payload.get("format") != ADAPTER_FORMAT:
        raise InputError(f"{path}: not a distilled adapter (expected format {ADAPTER_FORMAT!r})")
    check_state_matches(adapter.state_dict(), payload["state_dict"], path)
    adapter.load_state_dict(payload["state_dict"])
    return dict(payload.get("metadata") or {})
