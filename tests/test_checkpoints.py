import collections
import hashlib
import os
import pickle
import stat

import pytest
import timm
import torch
from segment_anything.modeling import PromptEncoder

from fsdino.checkpoints import (
    load_sam_decoder,
    read_checkpoint,
    save_checkpoint,
    sha256_of,
    verify_sha256,
)
from fsdino.config import EncoderConfig
from fsdino.errors import InputError
from fsdino.models.build import build_encoder, build_fsdino, load_fsdino
from fsdino.models.decoder import build_sam_mask_decoder
from tests.conftest import tiny_config


def write_sam_checkpoint(path, seed=1):
    """A checkpoint in the official SAM layout (decoder side at SAM's real sizes, a stub image encoder)."""
    torch.manual_seed(seed)
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    state = {f"prompt_encoder.{k}": v for k, v in prompt_encoder.state_dict().items()}
    state.update({f"mask_decoder.{k}": v for k, v in build_sam_mask_decoder().state_dict().items()})
    state["image_encoder.pos_embed"] = torch.zeros(1, 64, 64, 1280)
    state["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53])
    torch.save(state, path)
    return state


def test_sam_decoder_weights_are_remapped_into_the_model(tmp_path):
    path = tmp_path / "sam_vit_h.pth"
    sam = write_sam_checkpoint(path)
    for variant in ("ba_pcs", "full"):
        model = build_fsdino(tiny_config(variant))
        loaded = load_sam_decoder(model, path, sha256_of(path))
        own = model.state_dict()
        assert torch.equal(
            own["decoder.mask_decoder.transformer.layers.0.self_attn.q_proj.weight"],
            sam["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"],
        )
        assert torch.equal(own["mask_downscaling.0.weight"], sam["prompt_encoder.mask_downscaling.0.weight"])
        assert torch.equal(
            own["decoder.positional_encoding.gaussian_matrix"],
            sam["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
        )
        assert ("sparse_token" in loaded) == (variant == "ba_pcs")
        assert not any(key.startswith("encoder.") for key in loaded)


def test_sam_checkpoint_with_wrong_checksum_is_refused(tmp_path):
    path = tmp_path / "sam.pth"
    write_sam_checkpoint(path)
    with pytest.raises(InputError, match=r"sam\.pth: sha256 mismatch"):
        load_sam_decoder(build_fsdino(tiny_config()), path, "0" * 64)


def test_a_non_sam_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match=r"other\.pth: not a SAM checkpoint: missing"):
        load_sam_decoder(build_fsdino(tiny_config()), path, None)


def test_fsdino_checkpoint_round_trip(tmp_path, tiny_models):
    path = tmp_path / "model.pt"
    model = tiny_models["ba_svp_pcs"]
    save_checkpoint(path, model, tiny_config("ba_svp_pcs"), {"fold": 0})
    restored, config, metadata = load_fsdino(path)
    assert config == tiny_config("ba_svp_pcs") and metadata == {"fold": 0}
    query, supports, masks = torch.rand(1, 3, 70, 70), torch.rand(1, 1, 3, 70, 70), torch.ones(1, 1, 70, 70)
    with torch.no_grad():
        assert torch.allclose(model(query, supports, masks).mask_logits, restored(query, supports, masks).mask_logits)
    _, state, _ = read_checkpoint(path)
    assert not any(key.startswith("encoder.") for key in state)


def test_the_same_checkpoint_saved_twice_has_the_same_bytes(tmp_path, tiny_models):
    # DVC hashes outputs by content: equal weights must give an equal file, whatever the temporary name was
    paths = [tmp_path / "a" / "model.pt", tmp_path / "b" / "other-name.pt"]
    for path in paths:
        save_checkpoint(path, tiny_models["full"], tiny_config("full"), {"fold": 1})
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}
    assert len(digests) == 1
    assert not [p.name for p in tmp_path.rglob("*") if p.is_file() and p not in paths]  # no temporary left


def test_checkpoint_of_another_variant_names_the_file_and_keys(tmp_path, tiny_models):
    path = tmp_path / "compact.pt"
    save_checkpoint(path, tiny_models["ba_svp_pcs"], tiny_config("full"))  # config says full
    with pytest.raises(InputError, match=r"compact\.pt: checkpoint does not match the model: missing keys correlation"):
        load_fsdino(path)


def test_pickled_objects_are_never_executed(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path.write_bytes(pickle.dumps({"format": Payload()}))
    with pytest.raises(InputError, match=r"evil\.pt: not a readable PyTorch weights file"):
        read_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "state.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(InputError, match=r"state\.pt: not an FS-DINO checkpoint"):
        read_checkpoint(path)


def test_verify_sha256_accepts_the_right_digest(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"fs-dino")
    verify_sha256(path, hashlib.sha256(b"fs-dino").hexdigest())


def write_official_dinov2(path):
    """A ViT-S/14 backbone in the layout of Meta's ``dinov2_vits14_pretrain.pth`` (518 px pos-embed)."""
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    state = dict(vit.state_dict())
    state["mask_token"] = torch.zeros(1, 384)
    torch.save(state, path)
    return state


def test_official_dinov2_checkpoint_loads_with_resampled_position_embedding(tmp_path):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    official = write_official_dinov2(path)
    config = EncoderConfig(name="vit_small_patch14_dinov2", weights=str(path), sha256=sha256_of(path))
    encoder = build_encoder(config, image_size=70)
    state = encoder.vit.state_dict()
    assert torch.equal(state["blocks.11.mlp.fc2.weight"], official["blocks.11.mlp.fc2.weight"])
    assert state["pos_embed"].shape == (1, 1 + 5 * 5, 384)
    truncated = build_encoder(config, image_size=70, blocks=3)
    assert torch.equal(truncated.vit.state_dict()["blocks.2.attn.qkv.weight"], official["blocks.2.attn.qkv.weight"])


def test_a_non_dinov2_file_is_refused_as_encoder_weights(tmp_path):
    path = tmp_path / "sam.pth"
    write_sam_checkpoint(path)
    with pytest.raises(InputError, match=r"sam\.pth: "):
        build_encoder(EncoderConfig(name="vit_small_patch14_dinov2", weights=str(path)), image_size=70)


@pytest.mark.parametrize("content", ["foreign pickle", "garbage", "cut short"])
def test_an_unreadable_checkpoint_says_what_was_expected_never_to_unpickle_it(tmp_path, content, recwarn):
    path = tmp_path / "model.pt"
    if content == "foreign pickle":
        path.write_bytes(pickle.dumps({"format": collections.Counter("ab")}))
    elif content == "garbage":
        path.write_bytes(b"hello garbage")
    else:
        torch.save({"a": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a readable PyTorch weights file (") and "\n" not in message
    assert "expected tensors and plain containers saved with torch.save" in message
    assert "weights_only" not in message and "trusted source" not in message
    assert not [w for w in recwarn if "pickle" in str(w.message)]  # torch's protocol warning is not passed on


def test_a_checkpoint_is_readable_by_others_under_the_usual_umask(tmp_path, tiny_models):
    previous = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "model.pt", tiny_models["full"], tiny_config("full"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model.pt").stat().st_mode) == 0o644
