"""The loops' learning-rate schedule, optimiser step (grad clipping) and mixed-precision modes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fsdino.errors import InputError
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import amp_dtype_for, optimizer_step, runtime
from fsdino.training.schedule import learning_rate


def test_constant_schedule_is_the_base_rate_after_warmup():
    assert [learning_rate(1e-3, step, 100) for step in (0, 50, 99)] == [1e-3] * 3
    assert learning_rate(1e-3, 0, 100, warmup_steps=10) == pytest.approx(1e-5)
    assert learning_rate(1e-3, 5, 100, warmup_steps=10) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert learning_rate(1e-3, 10, 100, warmup_steps=10) == 1e-3


def test_cosine_schedule_decays_from_the_base_rate_to_zero():
    rates = [learning_rate(2.0, step, 110, schedule="cosine", warmup_steps=10) for step in range(10, 111)]
    assert rates[0] == pytest.approx(2.0) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert rates[50] == pytest.approx(1.0)  # half-way through the decay
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert learning_rate(2.0, 500, 110, schedule="cosine") == pytest.approx(0.0, abs=1e-12)  # clamped


def test_poly_schedule_is_hdmnets_decay_from_the_initial_rate():
    # HDMNet's poly_learning_rate: base · (1 − iter/max_iter)^0.9, here with the 0-based step
    rates = [learning_rate(1e-3, step, 100, schedule="poly") for step in range(101)]
    assert rates[0] == 1e-3 and rates[100] == 0.0
    assert rates[50] == pytest.approx(1e-3 * 0.5**0.9) and rates[90] == pytest.approx(1e-3 * 0.1**0.9)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert learning_rate(1.0, 25, 100, schedule="poly", power=2.0) == pytest.approx(0.75**2)
    # after a warm-up the decay spans the remaining steps, from the base rate
    assert learning_rate(1.0, 10, 110, schedule="poly", warmup_steps=10) == 1.0
    assert learning_rate(1.0, 60, 110, schedule="poly", warmup_steps=10) == pytest.approx(0.5**0.9)
    with pytest.raises(ValueError, match="schedule: expected constant, cosine or poly"):
        learning_rate(1.0, 5, 10, schedule="step")


def test_loop_config_defaults_to_hdmnets_poly_schedule():
    config = LoopConfig(epochs=2, lr=1e-3)
    assert (config.schedule, config.power, config.warmup_steps, config.weight_decay) == ("poly", 0.9, 0, 0.01)
    assert config.lr_at(0, steps_per_epoch=50) == 1e-3
    assert config.lr_at(75, steps_per_epoch=50) == pytest.approx(1e-3 * 0.25**0.9)
    # a pure function of the global step: a resumed run (any epoch, any step) gets the same rate
    assert LoopConfig(epochs=2, lr=1e-3).lr_at(75, steps_per_epoch=50) == config.lr_at(75, steps_per_epoch=50)
    assert LoopConfig(epochs=2, lr=1.0, power=1.0).lr_at(25, steps_per_epoch=50) == pytest.approx(0.75)


def test_loop_config_spreads_the_schedule_over_all_epochs():
    config = LoopConfig(epochs=4, lr=1.0, schedule="cosine")
    assert config.lr_at(0, steps_per_epoch=10) == pytest.approx(1.0)
    assert config.lr_at(20, steps_per_epoch=10) == pytest.approx(0.5)
    assert config.lr_at(30, steps_per_epoch=10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))


def test_optimizer_step_sets_the_rate_and_clips_the_gradient_norm():
    weight = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([weight], lr=123.0)
    loss = (weight * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum()  # gradient norm 50
    optimizer_step(loss, optimizer, None, lr=0.1, grad_clip=5.0)
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert weight.grad.norm().item() == pytest.approx(5.0)
    torch.testing.assert_close(weight.detach(), torch.tensor([-0.3, -0.4, 0.0, 0.0]))
    unclipped = torch.nn.Parameter(torch.zeros(1))
    optimizer_step((unclipped * 3.0).sum(), torch.optim.SGD([unclipped], lr=1.0), None)
    assert unclipped.item() == pytest.approx(-3.0)


def test_amp_modes_on_the_cpu_auto_is_full_precision_and_bf16_autocasts(monkeypatch):
    cpu = torch.device("cpu")
    assert amp_dtype_for("auto", cpu) is None and amp_dtype_for("off", cpu) is None
    assert amp_dtype_for("bf16", cpu) is torch.bfloat16
    with pytest.raises(InputError, match=r"loop\.amp: 'fp16' needs a CUDA device, not 'cpu'; use 'bf16' or 'off'"):
        amp_dtype_for("fp16", cpu)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    left, right = torch.rand(4, 8), torch.rand(8, 3)
    with runtime("cpu", "bf16") as rt, rt.autocast():
        assert rt.amp_dtype is torch.bfloat16 and (left @ right).dtype == torch.bfloat16
    with runtime("cpu", "auto") as rt, rt.autocast():
        assert rt.amp_dtype is None and (left @ right).dtype == torch.float32
    with pytest.raises(InputError, match="'fp16' needs a CUDA device"), runtime("cpu", "fp16"):
        pass


def test_amp_modes_on_cuda(monkeypatch):
    cuda = torch.device("cuda", 0)  # only the choice of dtype: nothing runs on the device
    assert amp_dtype_for("off", cuda) is None
    assert amp_dtype_for("fp16", cuda) is torch.float16 and amp_dtype_for("bf16", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype_for("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype_for("auto", cuda) is torch.float16


def test_the_batch_size_is_global_and_each_rank_takes_its_share():
    from fsdino.errors import InputError
    from fsdino.training.config import LoopConfig

    config = LoopConfig(batch_size=8)
    assert [config.rank_batch_size(world) for world in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(InputError, match=r"loop.batch_size: 8 is the global batch .* among 3 ranks"):
        config.rank_batch_size(3)
