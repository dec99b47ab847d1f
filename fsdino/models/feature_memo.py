"""A content-addressed memo of the frozen encoder's outputs.

DINOv2 never trains (paper §3.4.3), so the features of an image tensor are a pure function of its bytes.
:class:`FeatureMemo` keys each B×3×H×W input image by a BLAKE2b digest of its shape, dtype and bytes and
keeps ``layer3`` / ``last`` of the images it has seen; :class:`~fsdino.models.encoder.DinoV2Encoder`
consults it when one is attached. Entries are stored in ``dtype`` (fp16 by default: half the memory and
disk; a relative rounding of at most 2^-11 on features of magnitude ≲ 10) and every lookup, hit or miss,
returns the stored rounding, so a run gives the same numbers whether a feature was cached or not. A miss
is computed and stored until ``max_entries``.

This pays off when the same image tensors recur: evaluation episodes reuse a few hundred images, and
training with flip-only augmentation (the CPU demo) sees each image in two views. With HDMNet's random
scale/rotate/crop (the paper profiles) nearly every tensor is new, so the memo is off there.
The memo holds tensors only; saving and loading them is the pipeline's business (``state`` / ``from_state``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

#: Bytes of a key (BLAKE2b digest size).
KEY_BYTES = 16


def image_key(image: torch.Tensor) -> bytes:
    """The memo key of one C×H×W image tensor: BLAKE2b of its shape, dtype and bytes."""
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    digest.update(repr((tuple(image.shape), str(image.dtype))).encode())
    digest.update(image.detach().contiguous().cpu().numpy().tobytes())
    return digest.digest()


class FeatureMemo:
    """Image bytes → (layer3, last) feature maps of one frozen encoder.

    Args:
        max_entries: stop storing new entries beyond this many (``None``: no limit).
        dtype: storage dtype of the features.
    """

    def __init__(self, max_entries: int | None = None, dtype: torch.dtype = torch.float16) -> None:
        self.max_entries = max_entries
        self.dtype = dtype
        self._entries: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image: torch.Tensor) -> bool:
        return image_key(image) in self._entries

    def lookup(
        self, images: torch.Tensor, compute: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``images`` (B×3×H×W), computing only the unseen ones with ``compute`` in one batch.

        ``compute`` maps an N×3×H×W batch to (N×C×h×w layer3, N×C×h×w last). Returns both stacked
        in the order of ``images``, on ``images``' device, in ``images``' dtype (values rounded to
        the memo's ``dtype``).
        """
        keys = [image_key(image) for image in images]
        missing = [index for index, key in enumerate(keys) if key not in self._entries]
        computed: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        if missing:
            layer3, last = compute(images[missing])
            for row, index in enumerate(missing):
                computed[keys[index]] = (self._stored(layer3[row]), self._stored(last[row]))
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        for key, entry in computed.items():
            if self.max_entries is None or len(self._entries) < self.max_entries:
                self._entries[key] = entry
        rows = [computed[key] if key in computed else self._entries[key] for key in keys]
        device, dtype = images.device, images.dtype
        return (
            torch.stack([row[0] for row in rows]).to(device=device, dtype=dtype),
            torch.stack([row[1] for row in rows]).to(device=device, dtype=dtype),
        )

    def add(self, keys: list[bytes], layer3: torch.Tensor, last: torch.Tensor) -> int:
        """Store features computed elsewhere (N keys from :func:`image_key`, N×C×h×w each); a key already
        present keeps its entry, as a lookup would. Returns how many entries were added."""
        if not len(keys) == len(layer3) == len(last):
            raise ValueError(f"{len(keys)} keys for {len(layer3)} layer3 and {len(last)} last rows")
        added = 0
        for key, layer3_row, last_row in zip(keys, layer3, last, strict=True):
            if key in self._entries or (self.max_entries is not None and len(self._entries) >= self.max_entries):
                continue
            self._entries[key] = (self._stored(layer3_row), self._stored(last_row))
            added += 1
        return added

    def _stored(self, features: torch.Tensor) -> torch.Tensor:
        return features.detach().to(device="cpu", dtype=self.dtype)

    def state(self) -> dict[str, torch.Tensor]:
        """All entries as tensors: ``keys`` N×16 uint8, ``layer3`` and ``last`` N×C×h×w."""
        if not self._entries:
            raise ValueError("the feature memo is empty")
        keys = list(self._entries)
        shapes = {tuple(value[0].shape) for value in self._entries.values()}
        if len(shapes) != 1:
            raise ValueError(f"the memo holds features of several sizes {sorted(shapes)}; save one size at a time")
        return {
            "keys": torch.tensor([list(key) for key in keys], dtype=torch.uint8),
            "layer3": torch.stack([self._entries[key][0] for key in keys]),
            "last": torch.stack([self._entries[key][1] for key in keys]),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], max_entries: int | None = None) -> FeatureMemo:
        """Rebuild a memo from :meth:`state` (the caller checks it belongs to the same encoder)."""
        keys, layer3, last = state["keys"], state["layer3"], state["last"]
        if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or not (len(keys) == len(layer3) == len(last)):
            raise ValueError(f"a feature memo state needs N×{KEY_BYTES} keys and N feature rows of each kind")
        if layer3.dtype != last.dtype:
            raise ValueError(f"a feature memo state has layer3 in {layer3.dtype} but last in {last.dtype}")
        memo = cls(max_entries, dtype=layer3.dtype)
        for key, layer3_row, last_row in zip(keys.tolist(), layer3, last, strict=True):
            memo._entries[bytes(key)] = (layer3_row, last_row)
        return memo
