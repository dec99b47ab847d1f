"""Pictures people look at: predicted masks drawn over images."""

from __future__ import annotations

import numpy as np

DEFAULT_COLOUR = (255, 64, 32)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """H×W bool → H×W bool: foreground pixels with a 4-neighbour in the background (or the image edge)."""
    padded = np.pad(mask.astype(bool), 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask.astype(bool) & ~interior


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = DEFAULT_COLOUR, alpha: float = 0.45
) -> np.ndarray:
    """Blend ``colour`` over the masked pixels of ``image`` and outline the mask.

    Args:
        image: H×W×3 uint8.
        mask: H×W bool (or {0, 1}).
        colour: RGB of the fill and the outline.
        alpha: fill opacity.

    Returns:
        H×W×3 uint8.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    out = image.astype(np.float32)
    fill = mask.astype(bool)
    tint = np.asarray(colour, dtype=np.float32)
    out[fill] = (1 - alpha) * out[fill] + alpha * tint
    out[mask_boundary(fill)] = tint
    return out.round().clip(0, 255).astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """3×H×W float in [0, 1] (a model input) → H×W×3 uint8."""
    return (np.transpose(image, (1, 2, 0)) * 255).round().clip(0, 255).astype(np.uint8)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))


def episode_panel(
    support_images: np.ndarray,
    support_masks: np.ndarray,
    query_image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
) -> np.ndarray:
    """One row: each support with its mask (green), the query with its ground truth (blue), the query
    with the prediction (orange). Ignore pixels (255) of the ground truth are shown grey.

    Args:
        support_images: K×3×S×S float in [0, 1].
        support_masks: K×S×S {0, 1, 255}.
        query_image: 3×S×S float in [0, 1].
        truth: H×W {0, 1, 255} at the query's original size.
        prediction: H×W bool at the same size.

    Returns:
        S×(K+2)·S×3 uint8.
    """
    size = query_image.shape[-1]
    tiles = [
        overlay_mask(_to_uint8(image), mask == 1, colour=(40, 200, 80))
        for image, mask in zip(support_images, support_masks, strict=True)
    ]
    query = _to_uint8(query_image)
    truth_small = _resize_mask(truth, size)
    truth_tile = overlay_mask(query, truth_small == 1, colour=(40, 120, 255))
    truth_tile[truth_small == 255] = (128, 128, 128)
    tiles += [truth_tile, overlay_mask(query, _resize_mask(prediction, size).astype(bool))]
    return np.concatenate(tiles, axis=1)
