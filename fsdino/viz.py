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
