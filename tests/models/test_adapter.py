import torch

from fsdino.models.adapter import BottleneckAdapter, SelfAttentionBlock
from fsdino.models.summary import count_parameters


def test_adapter_maps_layer3_features_to_sam_embedding_shape():
    adapter = BottleneckAdapter(in_dim=384)
    out = adapter(torch.randn(2, 384, 9, 9))
    assert out.shape == (2, 256, 9, 9)


def test_adapter_layer_sizes_follow_the_paper():
    adapter = BottleneckAdapter(in_dim=768)
    convs = [m for m in adapter.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (768, 256, (1, 1)),
        (256, 256, (3, 3)),
        (256, 128, (1, 1)),
        (128, 256, (1, 1)),
    ]
    blocks = [m for m in adapter.modules() if isinstance(m, SelfAttentionBlock)]
    assert len(blocks) == 2
    assert blocks[0].attn.embed_dim == 128
    assert blocks[0].mlp[0].out_features == 512


def test_adapter_parameter_count_with_vit_b_is_about_1_2m():
    assert 1_000_000 <= count_parameters(BottleneckAdapter(in_dim=768)) <= 1_400_000


def test_self_attention_mixes_positions():
    block = SelfAttentionBlock(dim=128, mlp_dim=512).eval()
    tokens = torch.randn(1, 10, 128)
    changed = tokens.clone()
    changed[0, 0] += 1.0
    delta = (block(changed) - block(tokens))[0, 1:].abs().sum()
    assert delta > 0  # a change at token 0 reaches the other tokens
