"""Meta-visual prompts that need no 4D correlation (paper §3.4.1).

* the semantic visual prompt (SVP): a sparse prompt token made from the support's last-layer features;
* the prototype cosine similarity (PCS, eq. 2): a parameter-free dense prompt.

K-shot fusion: the prototype and the SVP token are masked averages over the foreground pixels of all K
supports together (pixel-weighted), so a 5-shot episode yields one prototype and one token.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_EPS = 1e-6


def masked_average(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked average pooling over all shots and positions.

    Eq. 2 writes the prototype as a plain mean over H×W; we read "Mean Aggregation Pooling" as the
    standard masked average over the support's foreground (otherwise p would not depend on the class).

    Args:
        features: B×K×C×h×w support features.
        masks: B×K×h×w soft foreground masks on the same grid.

    Returns:
        B×C prototypes.
    """
    weights = masks.unsqueeze(2)  # B×K×1×h×w
    total = (features * weights).sum(dim=(1, 3, 4))
    return total / weights.sum(dim=(1, 3, 4)).clamp_min(_EPS)


def prototype_cosine_similarity(query_features: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
    """S_pcs of eq. 2: cosine similarity between every query position and the class prototype.

    Args:
        query_features: B×C×h×w last-layer query features.
        prototype: B×C.

    Returns:
        B×1×h×w similarity in [-1, 1].
    """
    query = F.normalize(query_features, dim=1)
    proto = F.normalize(prototype, dim=1)
    return torch.einsum("bchw,bc->bhw", query, proto).unsqueeze(1)


class SemanticVisualPrompt(nn.Module):
    """Project last-layer support features to SAM's prompt dimension and average them into one token.

    The projection is Linear(C→256) + LayerNorm (our choice: the paper says "process … to match the
    dimension"; the norm keeps the token on the scale of SAM's point embeddings). The projection is
    applied per pixel before masked averaging, which equals projecting the prototype (it is linear)
    followed by the norm.

    Args:
        in_dim: DINOv2 feature channels.
        prompt_dim: SAM's prompt embedding dimension (256).
    """

    def __init__(self, in_dim: int = 768, prompt_dim: int = 256) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, prompt_dim)
        self.norm = nn.LayerNorm(prompt_dim)

    def forward(self, prototype: torch.Tensor) -> torch.Tensor:
        """prototype: B×C (masked average of the support features) → B×1×256 sparse prompt token."""
        return self.norm(self.proj(prototype)).unsqueeze(1)
