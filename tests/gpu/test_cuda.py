"""What only a CUDA device can check: FS-DINO on the GPU against the CPU, bf16 autocast there, both training
loops on the GPU under the project's runtime, and a model trained on the GPU serving on the CPU.

Skipped where there is no CUDA device (CI has none); ``benchmarks/gpu_session.sh`` runs them on a lent GPU
(``python -m pytest -m gpu tests/gpu``). Comparisons with the CPU run with TF32 off, so that float32 on the
GPU is float32.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from benchmarks.common import episode_inputs
from fsdino.checkpoints import save_checkpoint
from fsdino.inference import Segmenter
from fsdino.models.build import load_fsdino
from fsdino.training import distill, episodic
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import Runtime, runtime
from tests.conftest import TINY_SIZE
from tests.training.loops import TinyImages, distill_adapter, distill_parts, episodes_of, episodic_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    """Float32 matmuls and convolutions in full float32 (cuDNN convolutions default to TF32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float().cpu() - reference.float().cpu()).norm() / reference.float().cpu().norm()).item()


@pytest.mark.parametrize("variant", ["ba_pcs", "ba_svp_pcs", "full"])
def test_every_variant_gives_the_cpus_logits_on_cuda_in_float32(tiny_models, variant):
    model = tiny_models[variant]
    on_gpu = copy.deepcopy(model).to(CUDA)
    query, support, masks = episode_inputs(2, 2, TINY_SIZE, CPU, seed=3)
    with torch.no_grad():
        expected = model(query, support, masks)
        output = on_gpu(query.to(CUDA), support.to(CUDA), masks.to(CUDA))
    assert output.mask_logits.device.type == "cuda" and output.mask_logits.dtype == torch.float32
    torch.testing.assert_close(output.mask_logits.cpu(), expected.mask_logits, atol=2e-4, rtol=1e-3)
    if expected.prior_logits is not None:
        torch.testing.assert_close(output.prior_logits.cpu(), expected.prior_logits, atol=2e-4, rtol=1e-3)


def test_bf16_autocast_on_cuda_stays_within_bf16_precision_of_float32(tiny_models):
    model = copy.deepcopy(tiny_models["full"]).to(CUDA)
    query, support, masks = episode_inputs(4, 1, TINY_SIZE, CUDA, seed=5)
    bf16 = Runtime(CUDA, amp_dtype=torch.bfloat16)
    with torch.no_grad():
        reference = model(query, support, masks).mask_logits
        with bf16.autocast():
            mixed = model(query, support, masks).mask_logits
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 ≈ 0.004); a few dozen layers compound it
    assert 0 < relative_error(mixed, reference) < 0.05
    agreement = ((mixed.float() > 0) == (reference > 0)).float().mean().item()
    assert agreement > 0.95


def test_the_runtime_picks_the_gpu_and_bf16_by_default(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with runtime("auto", "auto") as rt:
        assert rt.device == torch.device("cuda:0") and rt.world_size == 1
        assert rt.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def gpu_loop_config(**overrides) -> LoopConfig:
    values = {"epochs": 2, "batch_size": 2, "checkpoint_every": 1, "seed": 3, "device": "cuda", "amp": "auto"}
    return LoopConfig(**(values | overrides))


def test_episodic_training_runs_on_cuda_under_autocast_and_serves_on_the_cpu(tmp_path):
    model, model_config = episodic_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    config = gpu_loop_config()
    with runtime(config.device, config.amp) as rt:
        assert rt.amp_dtype is not None  # bf16 (or fp16 with its grad scaler) on CUDA
        position = episodic.train_episodic(
            model=model, model_config=model_config, episodes=episodes_of(8), config=config, runtime=rt,
            work_dir=tmp_path / "work", fingerprint="gpu",
        )  # fmt: skip
    assert position.epoch == 2 and len(position.history) == 2
    assert all(math.isfinite(row["train_loss"]) for row in position.history)
    assert (tmp_path / "work/state.pt").is_file()
    moved = [name for name, value in model.state_dict().items() if not torch.equal(value.cpu(), before[name])]
    assert moved and not any(name.startswith("encoder.") for name in moved)  # the encoder stays frozen

    # the GPU-trained segmenter, saved and loaded on the CPU, gives the GPU's logits in float32
    save_checkpoint(tmp_path / "model.pt", model, model_config)
    on_cpu, _, _ = load_fsdino(tmp_path / "model.pt")
    on_cpu.encoder.load_state_dict(model.encoder.state_dict())  # random encoder weights: not in the checkpoint
    on_cpu.eval()
    model.eval()
    query, support, masks = episode_inputs(2, 1, TINY_SIZE, CPU, seed=9)
    with torch.no_grad():
        expected = on_cpu(query, support, masks).mask_logits
        output = model(query.to(CUDA), support.to(CUDA), masks.to(CUDA)).mask_logits
    torch.testing.assert_close(output.cpu(), expected, atol=2e-4, rtol=1e-3)


def test_distillation_runs_on_cuda_with_the_teacher_online(tmp_path):
    student, teacher = distill_parts()
    adapter = distill_adapter()
    before = {name: value.clone() for name, value in adapter.state_dict().items()}
    config = gpu_loop_config()
    with runtime(config.device, config.amp) as rt:
        position = distill.distill_stage(
            student=student, adapter=adapter, data=TinyImages(8), targets=distill.online_targets(teacher, rt),
            config=config, runtime=rt, checkpoint=tmp_path / "state.pt", fingerprint="gpu",
        )  # fmt: skip
    assert position.epoch == 2 and all(math.isfinite(value) for row in position.history for value in row.values())
    assert next(adapter.parameters()).device.type == "cuda"
    assert any(not torch.equal(value.cpu(), before[name]) for name, value in adapter.state_dict().items())


def test_the_segmenter_on_cuda_gives_the_cpus_probabilities(tiny_models):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(80, 100, 3), dtype=np.uint8)
    mask = np.zeros((80, 100), dtype=np.uint8)
    mask[20:40, 25:50] = 1
    queries = [rng.integers(0, 255, size=shape, dtype=np.uint8) for shape in ((60, 90, 3), (120, 70, 3))]
    results = []
    for device in ("cpu", "cuda"):
        segmenter = Segmenter(copy.deepcopy(tiny_models["full"]), TINY_SIZE, device=device, batch_size=2)
        segmenter.set_support([image], [mask])
        results.append(segmenter.predict(queries))
    for cpu_probability, gpu_probability in zip(*results, strict=True):
        assert gpu_probability.shape == cpu_probability.shape
        np.testing.assert_allclose(gpu_probability, cpu_probability, atol=1e-4)
