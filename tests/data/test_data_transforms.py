"""Transforms: output shapes and types, nearest-neighbour labels, 255 preserved and used for padding, HDMNet's
squash recipe against the evaluation resize, PFENet/BAM's pad-and-crop, OpenCV's 5×5 blur."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsdino.data.transforms import PAD_COLOUR, EvalTransform, TrainTransform, gaussian_blur_5x5


def _pair(height: int = 60, width: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    top, bottom = height // 6, height * 2 // 3
    mask[top:bottom, 20:70] = 1
    mask[top - 1, 19:71] = 255
    mask[bottom, 19:71] = 255
    return image, mask


@pytest.mark.parametrize("resize", ["squash", "pad_crop"])
@pytest.mark.parametrize("size", [56, 126])
def test_train_transform_keeps_labels(size: int, resize: str) -> None:
    image, mask = _pair()
    transform = TrainTransform(size, resize=resize, rotate_p=1.0)
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
    transform = TrainTransform(64, resize="pad_crop", fit_long_side=False, rotate_p=0.0, scale_range=(1.0, 1.0))
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


def test_hdmnet_squash_without_augmentation_is_the_evaluation_resize() -> None:
    # HDMNet trains on Resize([S, S]) and evaluates with resized_val (the same squash): one geometry
    image, mask = _pair(30, 60)
    plain = TrainTransform(64, scale_range=(1.0, 1.0), rotate_p=0.0, blur_p=0.0, flip_p=0.0)
    assert plain.resize == "squash" and plain.flip_only
    trained = plain(image, mask, np.random.default_rng(0))
    for got, expected in zip(trained, EvalTransform(64)(image, mask), strict=True):
        assert torch.equal(got, expected)
    # squashed, not letterboxed: no padding rows; the object's rows 5-19 of 30 become 32 rows of 64
    mask_tensor = trained[1]
    assert not (mask_tensor[0] == 255).all() and not (mask_tensor[-1] == 255).all()
    assert int((mask_tensor == 1).any(dim=1).sum()) == 32
    unflipped, flipped = (view for view, _ in plain.views(image, mask))
    assert torch.equal(unflipped, trained[0])
    assert torch.equal(flipped, EvalTransform(64)(np.ascontiguousarray(image[:, ::-1]), mask)[0])


def test_squash_keeps_the_output_size_whatever_the_scale_and_pads_rotations_like_hdmnet() -> None:
    image, mask = _pair(60, 90)
    image[:] = 200
    transform = TrainTransform(70, scale_range=(0.8, 1.25), rotate_range=(10.0, 10.0), rotate_p=1.0, blur_p=0.0)
    image_tensor, mask_tensor = transform(image, mask, np.random.default_rng(3))
    assert image_tensor.shape == (3, 70, 70) and mask_tensor.shape == (70, 70)
    # a 10° rotation uncovers the corners: label 255 (ignore), image the ImageNet mean colour
    assert mask_tensor[0, 0] == 255 and mask_tensor[-1, -1] == 255
    corner = (image_tensor[:, 0, 0] * 255).round().tolist()
    assert corner == pytest.approx(list(PAD_COLOUR), abs=1)
    # the pad-and-crop recipe letterboxes the same pair instead (rows of 255 above and below)
    letterbox = TrainTransform(70, resize="pad_crop", scale_range=(1.0, 1.0), rotate_p=0.0, blur_p=0.0, flip_p=0.0)
    _, boxed = letterbox(image, mask, np.random.default_rng(3))
    assert (boxed[:11] == 255).all() and (boxed[-12:] == 255).all()


def test_blur_is_opencvs_5x5_gaussian_with_reflected_borders() -> None:
    image = np.zeros((9, 9, 3), dtype=np.uint8)
    image[4, 4] = 160
    blurred = gaussian_blur_5x5(image)[..., 0].astype(int)
    taps = np.array([1, 4, 6, 4, 1])
    expected = np.rint(160 * np.outer(taps, taps) / 256).astype(int)  # cv2.getGaussianKernel(5, 0) = taps / 16
    assert np.array_equal(blurred[2:7, 2:7], expected) and blurred.sum() == expected.sum()
    edge = np.zeros((9, 9, 3), dtype=np.uint8)
    edge[1, 4] = 160  # reflect-101 mirrors row 1 onto row -1: row 0 gets taps 4 + 4 of 16 (replicate: 4, PIL: 0)
    assert gaussian_blur_5x5(edge)[0, 4, 0] == 160 * 8 * 6 // 256
