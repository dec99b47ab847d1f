"""The opt-in training speed-ups (``loop.compile``, ``loop.channels_last``, ``loop.fused_adamw``): what each does
to the loops, and that fused AdamW and channels-last train to the same weights as the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsdino.training import distill, episodic, speedups
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import Runtime
from tests.training.loops import (
    TinyImages,
    distill_adapter,
    distill_parts,
    episodes_of,
    episodic_model,
    segmenter_weights,
)

CPU = Runtime(torch.device("cpu"))


def loop_config(**options: bool) -> LoopConfig:
    return LoopConfig(epochs=1, batch_size=2, checkpoint_every=100, seed=3, device="cpu", **options)


def train_episodic(work_dir: Path, **options: bool) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model, model_config = episodic_model()
    episodic.train_episodic(
        model=model, model_config=model_config, episodes=episodes_of(8), config=loop_config(**options),
        runtime=CPU, work_dir=work_dir, fingerprint="speedups",
    )  # fmt: skip
    return model, segmenter_weights(model)


def test_the_speedups_are_off_by_default():
    config = LoopConfig()
    assert (config.compile, config.channels_last, config.fused_adamw) == (False, False, False)
    optimizer = speedups.adamw([torch.nn.Parameter(torch.zeros(3))], config)
    assert not optimizer.defaults["fused"]
    module = torch.nn.Conv2d(3, 4, 3)
    speedups.to_channels_last(module, config)
    assert speedups.compiled(module, config) is module and module.weight.is_contiguous()
    images = torch.rand(2, 3, 8, 8)
    assert speedups.input_format(images, config) is images


def test_fused_adamw_and_channels_last_change_the_optimizer_and_the_memory_format():
    config = LoopConfig(fused_adamw=True, channels_last=True, lr=0.01, weight_decay=0.1)
    optimizer = speedups.adamw([torch.nn.Parameter(torch.zeros(3))], config)
    assert optimizer.defaults["fused"] is True
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (0.01, 0.1)
    module = torch.nn.Conv2d(3, 4, 3)
    speedups.to_channels_last(module, config)
    assert module.weight.is_contiguous(memory_format=torch.channels_last) and not module.weight.is_contiguous()
    images = speedups.input_format(torch.rand(2, 3, 8, 8), config)
    assert images.is_contiguous(memory_format=torch.channels_last)
    supports = torch.rand(2, 1, 3, 8, 8)  # B×K×3×H×W: no channels-last layout for 5-D
    assert speedups.input_format(supports, config) is supports


@pytest.mark.parametrize("options", [{"fused_adamw": True}, {"channels_last": True}], ids=["fused", "channels-last"])
def test_an_episodic_run_with_a_speedup_ends_at_the_default_runs_weights(tmp_path, options):
    _, reference = train_episodic(tmp_path / "default")
    model, weights = train_episodic(tmp_path / "fast", **options)
    # Float rounding differs (another kernel order); AdamW's step divides by √v, so a gradient whose exact value
    # is 0 (an attention key bias: softmax ignores a shift shared by all keys) turns rounding noise into steps
    # of up to lr. Almost every weight agrees to 1e-5, and all of them to lr·steps/10 (lr 1e-3, 4 steps).
    assert sorted(weights) == sorted(reference)
    difference = torch.cat([(weights[name] - value).abs().flatten() for name, value in reference.items()])
    assert (difference <= 1e-5).double().mean().item() >= 0.999, f"{int((difference > 1e-5).sum())} weights differ"
    assert difference.max().item() <= 4e-4
    if options.get("channels_last"):
        assert model.encoder.vit.patch_embed.proj.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_wraps_the_trained_module_of_both_loops(tmp_path, monkeypatch):
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    model, _ = train_episodic(tmp_path / "episodic", compile=True)
    student, teacher = distill_parts()
    adapter = distill_adapter()
    distill.distill_stage(
        student=student, adapter=adapter, data=TinyImages(4), targets=distill.online_targets(teacher, CPU),
        config=loop_config(compile=True), runtime=CPU, checkpoint=tmp_path / "state.pt", fingerprint="speedups",
    )  # fmt: skip
    assert compiled == [model, adapter]  # the whole FS-DINO forward; the adapter, not the frozen student


@pytest.mark.slow
def test_distillation_really_compiles_and_matches_the_eager_loss(tmp_path):
    student, teacher = distill_parts()
    targets = distill.online_targets(teacher, CPU)
    losses = {}
    for name, compile_ in (("eager", False), ("compiled", True)):
        adapter = distill_adapter()
        position = distill.distill_stage(
            student=student, adapter=adapter, data=TinyImages(4), targets=targets,
            config=loop_config(compile=compile_), runtime=CPU, checkpoint=tmp_path / f"{name}.pt", fingerprint=name,
        )  # fmt: skip
        losses[name] = position.history[0]["loss"]
    torch._dynamo.reset()
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
