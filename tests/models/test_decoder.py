import torch
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

from fsdino.models.decoder import LearnableFourierPositionalEncoding, PromptedMaskDecoder, build_mask_downscaling


def test_decoder_is_batch_correct():
    """SAM's predict_masks repeats the image embedding per prompt; ours must decode each image with its
    own prompts, so a batch of two equals two batches of one."""
    torch.manual_seed(0)
    decoder = PromptedMaskDecoder().eval()
    embeddings, sparse, dense = torch.randn(2, 256, 6, 6), torch.randn(2, 1, 256), torch.randn(2, 256, 6, 6)
    with torch.no_grad():
        batched = decoder(embeddings, sparse, dense)
        single = torch.cat([decoder(embeddings[i : i + 1], sparse[i : i + 1], dense[i : i + 1]) for i in range(2)])
    assert batched.shape == (2, 1, 24, 24)
    assert torch.allclose(batched, single, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_decoder_accepts_no_sparse_prompt():
    out = PromptedMaskDecoder()(torch.randn(1, 256, 4, 4), torch.zeros(1, 0, 256), torch.zeros(1, 256, 4, 4))
    assert out.shape == (1, 1, 16, 16)


def test_positional_encoding_equals_sams_for_the_same_matrix_and_is_learnable():
    ours = LearnableFourierPositionalEncoding()
    sam = PositionEmbeddingRandom(128)
    sam.positional_encoding_gaussian_matrix.copy_(ours.gaussian_matrix.detach())
    assert torch.allclose(ours((5, 7)), sam((5, 7)), atol=1e-5)
    assert ours.gaussian_matrix.requires_grad
    ours((3, 3)).sum().backward()
    assert ours.gaussian_matrix.grad is not None


def test_unused_sam_heads_are_frozen():
    decoder = PromptedMaskDecoder()
    mlps = decoder.mask_decoder.output_hypernetworks_mlps
    assert all(p.requires_grad for p in mlps[0].parameters())
    assert not any(p.requires_grad for m in mlps[1:] for p in m.parameters())
    assert not any(p.requires_grad for p in decoder.mask_decoder.iou_prediction_head.parameters())


def test_mask_downscaling_turns_4x_mask_into_dense_embedding():
    assert build_mask_downscaling()(torch.randn(2, 1, 148, 148)).shape == (2, 256, 37, 37)
