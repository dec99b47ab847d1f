"""Transforms: output shapes and types, nearest-neighbour labels, 255 preserved and used for padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsdino.data.transforms import EvalTransform, TrainTransform


def _pair(height: int = 60, width: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    top, bottom = height // 6, height * 2 // 3
    mask[top:bottom, 20:70] = 1
    mask[top - 1, 19:71] = 255
    mask[bottom, 19:71] = 255
    return image, mask


@pytest.mark.parametrize("size", [56, 126])
def test_train_transform_keeps_labels(size: int) -> None:
    image, mask = _pair()
    transform = TrainTransform(size, rotate_p=1.0)
    seen_ignore = False
    for seed in range(20):
        image_tensor, mask_tensor = transform(image, mask, np.random.default_rng(seed))
        assert image_tensor.shape == (3, size, size) and image_tensor.dtype == torch.float32
        assert image_tensor.min() >= 0.0 and image_tensor.max() <= 1.0
        assert mask_tensor.shape == (size, size) and mask_tensor.dtype == torch.int64
        assert set(mask_tensor.unique().tolist()) <= {0, 1, 255}
        assert (mask_tensor == 1).any()
        seen_ignore |= bool((mask_tensor == 255).any())
    assert seen_ignore


def test_train_transform_pads_with_ignore_and_is_seeded() -> None:
    image, mask = _pair(30, 60)
    transform = TrainTransform(64, fit_long_side=False, rotate_p=0.0, scale_range=(1.0, 1.0))
    _, mask_tensor = transform(image, mask, np.random.default_rng(0))
    # 30 rows padded to 64: 17 rows of 255 above, 17 below
    assert (mask_tensor[:17] == 255).all() and (mask_tensor[-17:] == 255).all()
    first = transform(image, mask, np.random.default_rng(5))
    second = transform(image, mask, np.random.default_rng(5))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_eval_transform_resizes_to_square() -> None:
    image, mask = _pair()
    image_tensor, mask_tensor = EvalTransform(42)(image, mask)
    assert image_tensor.shape == (3, 42, 42) and mask_tensor.shape == (42, 42)
    assert set(mask_tensor.unique().tolist()) <= {0, 1, 255}
    assert torch.allclose(
        EvalTransform(60)(image[:60, :60], mask[:60, :60])[0] * 255,
        torch.from_numpy(image[:60, :60]).permute(2, 0, 1).float(),
    )
