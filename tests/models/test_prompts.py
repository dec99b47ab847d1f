import torch
from torch.nn import functional as F

from fsdino.models.layers import mask_to_grid
from fsdino.models.prompts import SemanticVisualPrompt, masked_average, prototype_cosine_similarity


def test_masked_average_pools_foreground_pixels_over_all_shots():
    features = torch.zeros(1, 2, 1, 2, 2)
    features[0, 0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    features[0, 1, 0] = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1  # picks 1
    masks[0, 1, 1, 1] = 1  # picks 40
    masks[0, 1, 0, 1] = 1  # picks 20
    assert torch.allclose(masked_average(features, masks), torch.tensor([[(1 + 40 + 20) / 3]]))


def test_masked_average_uses_soft_weights():
    features = torch.tensor([2.0, 4.0]).view(1, 1, 1, 1, 2)
    masks = torch.tensor([1.0, 0.5]).view(1, 1, 1, 2)
    assert torch.allclose(masked_average(features, masks), torch.tensor([[(2 + 0.5 * 4) / 1.5]]))


def test_prototype_cosine_similarity_matches_eq_2():
    query = torch.randn(2, 16, 3, 4)
    prototype = torch.randn(2, 16)
    pcs = prototype_cosine_similarity(query, prototype)
    expected = F.cosine_similarity(query, prototype[:, :, None, None], dim=1).unsqueeze(1)
    assert pcs.shape == (2, 1, 3, 4)
    assert torch.allclose(pcs, expected, atol=1e-6)


def test_semantic_visual_prompt_is_one_256d_token():
    svp = SemanticVisualPrompt(in_dim=384)
    assert svp(torch.randn(3, 384)).shape == (3, 1, 256)


def test_mask_to_grid_is_foreground_fraction_per_patch():
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., :14, :7] = 1  # half of the top-left 14×14 patch
    grid = mask_to_grid(mask, (2, 2))
    assert torch.allclose(grid[0, 0], torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
