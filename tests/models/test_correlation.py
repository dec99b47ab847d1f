import pytest
import torch
from torch.nn import functional as F

from fsdino.models.correlation import Correlation4D, correlation_4d, swap_query_support
from fsdino.models.summary import count_parameters


def test_correlation_4d_is_cosine_between_support_and_query_positions():
    query = torch.randn(1, 8, 3, 3)
    support = torch.randn(1, 8, 3, 3)
    corr = correlation_4d(query, support)
    assert corr.shape == (1, 9, 3, 3)
    s, q = 4, 7  # support position (1, 1), query position (2, 1)
    expected = F.cosine_similarity(support.flatten(2)[0, :, s], query.flatten(2)[0, :, q], dim=0)
    assert torch.allclose(corr[0, s].flatten()[q], expected, atol=1e-6)


def test_masked_out_support_positions_correlate_to_zero():
    support = torch.randn(1, 8, 3, 3)
    support[..., 0, :] = 0
    corr = correlation_4d(torch.randn(1, 8, 3, 3), support)
    assert torch.all(corr[0, :3] == 0)


@pytest.mark.parametrize("grid", [5, 8])
def test_module_outputs_prior_logits_at_four_times_the_grid(grid):
    module = Correlation4D(grid_size=grid)
    out = module(torch.randn(2, 32, grid, grid), torch.randn(2, 32, grid, grid), torch.rand(2, 1, grid, grid))
    assert out.shape == (2, 1, 4 * grid, 4 * grid)


def test_layer_sizes_at_518_px_follow_eq_3_to_5():
    module = Correlation4D(grid_size=37)
    conv1, conv2 = module.reduce[0], module.reduce[2]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size) == (1369, 512, (1, 1))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.stride) == (512, 361, (3, 3), (2, 2))
    assert module.depthwise.groups == 361 and module.depthwise.kernel_size == (3, 3)
    assert module.pointwise.kernel_size == (1, 1) and module.pointwise.in_channels == 361
    assert 2_800_000 <= count_parameters(module) <= 5_000_000


def test_swapping_views_moves_query_positions_into_channels():
    corr = torch.randn(2, 9, 3, 3)  # support positions in channels, query 3×3 in space
    swapped = swap_query_support(corr)
    support_pos, query_row, query_col = 5, 2, 0
    assert (
        swapped[1, query_row * 3 + query_col, support_pos // 3, support_pos % 3]
        == corr[1, support_pos, query_row, query_col]
    )
    assert torch.equal(swap_query_support(swapped), corr)


def test_rejects_a_grid_it_was_not_built_for():
    with pytest.raises(ValueError, match="5×5 feature grid"):
        Correlation4D(grid_size=5)(torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6), torch.randn(1, 1, 6, 6))
