"""The episodic loop (``fsdino/training/episodic.py``) on a tiny 70-px setup (``tests/training/loops.py``):
exact resume after a kill, best/last checkpoints, bf16 autocast on the CPU, and DDP under torchrun."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fsdino.checkpoints import load_weights_file, read_checkpoint
from fsdino.errors import InputError
from fsdino.losses import fsdino_loss
from fsdino.models.build import load_fsdino
from fsdino.training.checkpointing import RunPosition
from fsdino.training.config import LoopConfig
from fsdino.training.episodic import train_episodic
from fsdino.training.runtime import Runtime, runtime
from tests.training.loops import (
    DDP_BATCH,
    DDP_EPOCHS,
    DDP_ITEMS,
    SCRIPTED_MIOU,
    FirstGradients,
    ScriptedValidation,
    assert_matches_single_process,
    ddp_config,
    episodes_of,
    episodic_model,
    segmenter_weights,
    torchrun,
)

CPU = Runtime(torch.device("cpu"))
EPISODES = 2  # 2 steps of batch 1 per epoch, 3 epochs: 6 steps


def loop_config(**overrides: object) -> LoopConfig:
    # the poly schedule (the paper profiles'): the resume test checks that the rate follows the global step
    values = {"epochs": 3, "batch_size": 1, "checkpoint_every": 3, "seed": 3, "schedule": "poly"}
    return LoopConfig(**{**values, **overrides})


class KilledError(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One uninterrupted run of 3 epochs, validated with the scripted scores 0.2, 0.7, 0.4."""
    work_dir = tmp_path_factory.mktemp("reference")
    model, model_config = episodic_model()
    validation = ScriptedValidation()
    position = train_episodic(
        model=model, model_config=model_config, episodes=episodes_of(EPISODES), config=loop_config(), runtime=CPU,
        work_dir=work_dir, fingerprint="run", validate=validation, metadata={"run": "reference"},
        on_step=validation.on_step,
    )  # fmt: skip
    return SimpleNamespace(
        model=model, model_config=model_config, position=position, validation=validation, work_dir=work_dir
    )


def test_best_and_last_checkpoints_carry_the_config_and_the_metrics(reference: SimpleNamespace) -> None:
    history = reference.position.history
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert [row["val_miou"] for row in history] == list(SCRIPTED_MIOU)
    assert reference.validation.calls == [0, 1, 2] and reference.position.best_score == 0.7
    assert sorted(path.name for path in reference.work_dir.iterdir()) == ["best.pt", "last.pt", "state.pt"]

    best, best_config, best_metadata = load_fsdino(reference.work_dir / "best.pt")
    assert best_config == reference.model_config and best.variant == "full"
    assert best_metadata == {"run": "reference", **{key: float(value) for key, value in history[1].items()}}
    assert best_metadata["epoch"] == 1.0 and best_metadata["val_miou"] == 0.7 and best_metadata["val_fb_iou"] == 0.85
    last_config, last_state, last_metadata = read_checkpoint(reference.work_dir / "last.pt")
    assert last_config == reference.model_config
    assert last_metadata["epoch"] == 2.0 and last_metadata["val_miou"] == 0.4
    assert math.isfinite(last_metadata["train_loss"]) and last_metadata["train_loss"] == history[2]["train_loss"]

    after_epoch_1, final = reference.validation.weights[1], segmenter_weights(reference.model)
    assert not torch.equal(after_epoch_1["adapter.reduce.0.weight"], final["adapter.reduce.0.weight"])
    best_state = segmenter_weights(best)
    assert sorted(best_state) == sorted(final) == sorted(last_state)
    for name in final:
        assert torch.equal(best_state[name], after_epoch_1[name]), name
        assert torch.equal(last_state[name], final[name]), name


def test_a_run_killed_mid_epoch_resumes_to_bit_identical_weights(reference: SimpleNamespace, tmp_path: Path) -> None:
    work_dir = tmp_path / "run"
    common = {"model_config": reference.model_config, "episodes": episodes_of(EPISODES), "runtime": CPU}
    common |= {"config": loop_config(), "work_dir": work_dir, "metadata": {"run": "reference"}}
    killed_validation = ScriptedValidation()

    def kill_at_step_3(
        position: RunPosition,
    ) -> None:  # the first step of epoch 1, right after the checkpoint of step 3
        killed_validation.on_step(position)
        if position.global_step == 3:
            raise KilledError

    with pytest.raises(KilledError):
        train_episodic(
            model=episodic_model()[0], fingerprint="run", validate=killed_validation, on_step=kill_at_step_3, **common
        )
    saved = load_weights_file(work_dir / "state.pt")["position"]
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, 1, 3)
    assert killed_validation.calls == [0]

    validation, steps = ScriptedValidation(), []

    def record(position: RunPosition) -> None:
        validation.on_step(position)
        steps.append(position.global_step)

    resumed, _ = episodic_model()  # a new process: fresh weights, then the checkpoint
    position = train_episodic(model=resumed, fingerprint="run", validate=validation, on_step=record, **common)
    assert steps == [4, 5, 6] and validation.calls == [1, 2]
    assert position.history == reference.position.history
    assert position.best_score == reference.position.best_score
    expected, actual = segmenter_weights(reference.model), segmenter_weights(resumed)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name
    for name in ("best.pt", "last.pt"):
        _, expected_state, expected_metadata = read_checkpoint(reference.work_dir / name)
        _, state, metadata = read_checkpoint(work_dir / name)
        assert metadata == expected_metadata
        assert all(torch.equal(state[key], value) for key, value in expected_state.items()), name

    with pytest.raises(InputError, match="another configuration"):
        train_episodic(model=resumed, fingerprint="other", **common)


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    config = loop_config(epochs=1, amp="bf16", device="cpu")
    model, model_config = episodic_model()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    initial = segmenter_weights(model)
    dtypes: list[torch.dtype] = []
    first_convolution = model.adapter.reduce[0]  # (the adapter ends in a LayerNorm, which autocast runs in fp32)
    assert isinstance(first_convolution, torch.nn.Conv2d)
    first_convolution.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    with runtime(config.device, config.amp) as rt:
        assert rt.amp_dtype is torch.bfloat16 and not rt.distributed
        position = train_episodic(
            model=model, model_config=model_config, episodes=episodes_of(EPISODES), config=config, runtime=rt,
            work_dir=tmp_path, fingerprint="bf16",
        )  # fmt: skip
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # two steps, both under autocast
    row = position.history[0]
    assert all(
        math.isfinite(row[key]) and row[key] > 0 for key in ("train_loss", "train_loss_final", "train_loss_prior")
    )
    final = segmenter_weights(model)
    assert all(value.dtype == torch.float32 for value in final.values())  # the master weights stay fp32
    changed = {name for name in final if not torch.equal(final[name], initial[name])}
    assert changed <= trainable  # frozen SAM heads never move
    assert len(changed) >= 0.95 * len(trainable)
    assert max((final[name] - initial[name]).abs().max().item() for name in changed) >= config.lr


def test_the_batch_loss_is_the_mean_of_the_per_episode_losses_without_ignore_pixels() -> None:
    """Why two DDP ranks sharing a global batch B (B/2 each) equal one process of batch B: the Dice term is a
    per-sample mean, the BCE term a mean over the batch's valid pixels, which is a per-sample mean when
    every sample has the same number of valid pixels (no 255). With ignore pixels the BCE of the union
    weights samples by their valid-pixel count, so DDP's mean of per-rank losses then differs from the
    union's loss."""
    generator = torch.Generator().manual_seed(0)
    logits, prior = torch.randn(2, 4, 1, 9, 9, generator=generator)
    target = (torch.rand(4, 9, 9, generator=generator) > 0.5).long()

    def halves_and_union(target: torch.Tensor) -> tuple[float, float]:
        halves = [fsdino_loss(logits[i : i + 2], prior[i : i + 2], target[i : i + 2]).total for i in (0, 2)]
        return (sum(halves) / 2).item(), fsdino_loss(logits, prior, target).total.item()

    mean_of_halves, union = halves_and_union(target)
    assert mean_of_halves == pytest.approx(union, rel=1e-6)
    ignored = target.clone()
    ignored[0, :7] = 255  # the first half has far fewer valid pixels
    mean_of_halves, union = halves_and_union(ignored)
    assert abs(mean_of_halves - union) > 1e-3


@pytest.mark.slow
def test_two_ddp_ranks_train_like_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    ranks = torchrun("episodic", tmp_path)
    assert [report["rank"] for report in ranks] == [0, 1]

    model, model_config = episodic_model()
    initial = segmenter_weights(model)
    validation, first = ScriptedValidation(), FirstGradients(model)
    config = ddp_config()  # the ranks' (global batch 4): rank r takes episodes r, r+2, …; batch k is 4k…4k+3
    position = train_episodic(
        model=model, model_config=model_config, episodes=episodes_of(DDP_ITEMS), config=config, runtime=CPU,
        work_dir=tmp_path / "single", fingerprint="single", validate=validation,
        on_step=lambda position: (validation.on_step(position), first.on_step(position)),
    )  # fmt: skip
    steps = DDP_EPOCHS * DDP_ITEMS // DDP_BATCH
    assert position.global_step == ranks[0]["global_step"] == ranks[1]["global_step"] == steps == 4

    for name, value in ranks[0]["weights"].items():  # DDP keeps the ranks in lockstep
        assert torch.equal(ranks[1]["weights"][name], value), name
    weights = segmenter_weights(model)
    assert_matches_single_process(ranks[0], first.gradients, weights, initial, lr=config.lr, steps=steps)
    for report in ranks:  # every rank's history holds the mean over both ranks' episodes
        assert len(report["history"]) == len(position.history) == DDP_EPOCHS
        for mine, single in zip(report["history"], position.history, strict=True):
            for key in ("train_loss", "train_loss_final", "train_loss_prior"):
                assert mine[key] == pytest.approx(single[key], rel=1e-5), key
    for report in ranks:  # validation runs on every rank (a rank-aware validate sums the ranks' counts)
        assert [row["val_miou"] for row in report["history"]] == list(SCRIPTED_MIOU[:DDP_EPOCHS])

    work_dir = tmp_path / "work"
    per_epoch = ["state.pt", "state.pt", "last.pt", "best.pt", "state.pt"]  # checkpoint_every=1, then the epoch's end
    assert ranks[0]["writes"] == per_epoch * DDP_EPOCHS and ranks[1]["writes"] == []
    assert ranks[0]["validated"] == ranks[1]["validated"] == [0, 1]
    assert sorted(path.name for path in work_dir.iterdir()) == ["best.pt", "last.pt", "state.pt"]
    _, best_state, best_metadata = read_checkpoint(work_dir / "best.pt")
    assert best_metadata["rank"] == 0 and best_metadata["epoch"] == 1.0 and best_metadata["val_miou"] == 0.7
    assert all(torch.equal(best_state[name], value) for name, value in ranks[0]["weights"].items())
    state = load_weights_file(work_dir / "state.pt")
    assert state["fingerprint"] == "ddp" and state["position"]["global_step"] == steps
