"""Tiny, seeded inputs of the training loops, and their torchrun entry point for the DDP tests.

The tests build their single-process runs from these builders; under
``python -m torch.distributed.run --standalone --nproc-per-node=2 -m tests.training.loops LOOP OUT`` every rank
builds the same inputs, trains with :func:`~fsdino.training.runtime.runtime` (gloo on the CPU) in the shared
folder ``OUT/work`` and writes ``OUT/rank<r>.pt``: its final weights, its history and the names of the files
it wrote through the loop's writers (recorded by wrapping them), so a test can tell which rank wrote.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from fsdino.checkpoints import segmenter_state
from fsdino.config import ModelConfig, TeacherConfig
from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.build import build_encoder, build_fsdino, build_teacher
from fsdino.models.encoder import DinoV2Encoder
from fsdino.models.fsdino import FSDINO
from fsdino.models.teacher import SamTeacher
from fsdino.training import distill, episodic
from fsdino.training.checkpointing import RunPosition
from fsdino.training.config import LoopConfig
from fsdino.training.runtime import runtime
from tests.conftest import TINY_SIZE, tiny_config
from tests.launch import ROOT, TORCHRUN_2, run_step

MODEL_SEED = 7
DATA_SEED = 11
#: Validation scores the scripted validation reports, by epoch: the best epoch is 1.
SCRIPTED_MIOU = (0.2, 0.7, 0.4)
#: DDP runs: episodes (or images) per epoch, per-rank batch size and epochs.
DDP_ITEMS, DDP_BATCH, DDP_EPOCHS = 8, 4, 2  # DDP_BATCH is the global batch: 2 per rank on 2 ranks
DDP_VAL_ITEMS = 5  # held-out images of the distillation comparison: 3 batches of 2, dealt 2 + 1 to the ranks
DISTILL_STUDENT_SIZE, DISTILL_TEACHER_SIZE = 56, 64


class TinyEpisodes(Dataset):
    """1-shot episodes of noisy S×S images with one bright rectangle, a pure function of (seed, epoch, index).

    Items carry the keys of :class:`fsdino.data.dataset.EpisodeDataset` (training: no original-size mask)::

        query_image 3×S×S float32 in [0, 1]   support_images 1×3×S×S   query_mask S×S int64 {0, 1}
        support_masks 1×S×S int64 {0, 1}      class_id, query_id, support_ids, index

    No pixel is 255 (ignore): every query has S² valid pixels, so the batch loss is the mean of the
    per-episode losses and a DDP step over ranks equals one step over their union.
    """

    def __init__(self, count: int, epoch: int, seed: int = DATA_SEED, size: int = TINY_SIZE) -> None:
        self.count, self.epoch, self.seed, self.size = count, epoch, seed, size

    def __len__(self) -> int:
        return self.count

    def _scene(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A 3×S×S image and its S×S {0, 1} mask: a rectangle of random place and colour on noise."""
        size = self.size
        image = torch.rand(3, size, size, generator=generator) * 0.3
        mask = torch.zeros(size, size, dtype=torch.long)
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        height, width = torch.randint(size // 5, size // 2, (2,), generator=generator).tolist()
        image[:, top : top + height, left : left + width] = 0.5 + 0.5 * torch.rand(3, 1, 1, generator=generator)
        mask[top : top + height, left : left + width] = 1
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + index)
        query_image, query_mask = self._scene(generator)
        support_image, support_mask = self._scene(generator)
        return {
            "query_image": query_image,
            "query_mask": query_mask,
            "support_images": support_image.unsqueeze(0),
            "support_masks": support_mask.unsqueeze(0),
            "class_id": 1 + index % 3,
            "query_id": f"q{self.epoch}_{index}",
            "support_ids": (f"s{self.epoch}_{index}",),
            "index": index,
        }


def episodes_of(count: int) -> Callable[[int], Dataset]:
    """The loop's ``episodes`` argument: epoch → that epoch's :class:`TinyEpisodes`."""
    return lambda epoch: TinyEpisodes(count, epoch)


def episodic_model(variant: str = "full") -> tuple[FSDINO, ModelConfig]:
    """A 70-px FS-DINO with random weights, the same for every call (and every process)."""
    config = tiny_config(variant)
    torch.manual_seed(MODEL_SEED)
    return build_fsdino(config), config


def segmenter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes and checkpoints store: every weight but the frozen encoder's."""
    return {name: value.clone() for name, value in segmenter_state(model).items()}


class ScriptedValidation:
    """A ``validate`` callback that reports ``SCRIPTED_MIOU[epoch]`` and keeps the weights it was shown.

    The loop calls ``validate(model)`` after an epoch's last step; :meth:`on_step` (pass it as, or call it
    from, the loop's ``on_step``) tells it which epoch that is, also in a resumed run.
    """

    def __init__(self, scores: Sequence[float] = SCRIPTED_MIOU) -> None:
        self.scores = tuple(scores)
        self.epoch: int | None = None
        self.calls: list[int] = []
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_step(self, position: RunPosition) -> None:
        self.epoch = position.epoch

    def __call__(self, model: FSDINO) -> dict[str, float]:
        if self.epoch is None:
            raise RuntimeError("validation before any step: on_step was not called")
        self.calls.append(self.epoch)
        self.weights[self.epoch] = segmenter_weights(model)
        return {"miou": self.scores[self.epoch], "fb_iou": 0.5 + self.scores[self.epoch] / 2}


class FirstGradients:
    """An ``on_step`` callback keeping the gradients of the first optimiser step (under DDP: the mean over the
    ranks, which DDP leaves in every rank's ``.grad``), keyed by parameter name."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.gradients: dict[str, torch.Tensor] = {}

    def on_step(self, position: RunPosition) -> None:
        if position.global_step == 1:
            named = self.model.named_parameters()
            self.gradients = {name: p.grad.clone() for name, p in named if p.requires_grad and p.grad is not None}


class TinyImages(Dataset):
    """Smooth random images for distillation: ``image`` 3×s×s (student), ``teacher_image`` 3×t×t, ``index``."""

    def __init__(
        self, count: int, student_size: int = DISTILL_STUDENT_SIZE, teacher_size: int = DISTILL_TEACHER_SIZE
    ) -> None:
        generator = torch.Generator().manual_seed(DATA_SEED)
        self.base = F.interpolate(torch.rand(count, 3, 8, 8, generator=generator), size=(64, 64), mode="bilinear")
        self.student_size, self.teacher_size = student_size, teacher_size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.base[index : index + 1]
        return {
            "image": F.interpolate(image, size=(self.student_size,) * 2, mode="area")[0],
            "teacher_image": F.interpolate(image, size=(self.teacher_size,) * 2, mode="area")[0],
            "index": index,
        }


def distill_parts() -> tuple[DinoV2Encoder, SamTeacher]:
    """The frozen 3-block student at 56 px and a random tiny SAM teacher at 64 px."""
    student = build_encoder(tiny_config().encoder, DISTILL_STUDENT_SIZE, blocks=3)
    return student, build_teacher(TeacherConfig(arch="tiny", image_size=DISTILL_TEACHER_SIZE))


def distill_adapter() -> BottleneckAdapter:
    """The adapter every distillation run starts from."""
    torch.manual_seed(MODEL_SEED)
    return BottleneckAdapter(in_dim=384)


def ddp_config(batch_size: int = DDP_BATCH, **overrides: Any) -> LoopConfig:
    """The loop settings of the DDP comparison, the same for 2 ranks and for one process (``batch_size`` is
    the global batch)."""
    values = {"epochs": DDP_EPOCHS, "batch_size": batch_size, "checkpoint_every": 1, "seed": 3, "device": "cpu"}
    return LoopConfig(**{**values, **overrides})


class WriteJournal:
    """Wraps a module's writer functions so that every call records the name of the file written."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def wrap(self, module: Any, *writers: str) -> None:
        for name in writers:
            setattr(module, name, self._recording(getattr(module, name)))

    def _recording(self, writer: Callable[..., None]) -> Callable[..., None]:
        def write(path: Path, *args: Any, **kwargs: Any) -> None:
            self.names.append(Path(path).name)
            writer(path, *args, **kwargs)

        return write


def torchrun(loop: str, out: Path) -> list[dict[str, Any]]:
    """Train ``loop`` with 2 ranks under ``torchrun --standalone`` (CPU, gloo); the two ranks' reports.

    ``OUT/work`` is the run's shared folder. A failed launch fails the calling test with the ranks' output.
    """
    run_step([*TORCHRUN_2, "-m", "tests.training.loops", loop, str(out)], ROOT)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def assert_matches_single_process(
    rank: dict[str, Any],
    gradients: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    initial: dict[str, torch.Tensor],
    *,
    lr: float,
    steps: int,
) -> None:
    """Check a DDP rank's report against one process trained on the union of the ranks' batches.

    Both losses are per-sample means over equal-sized samples, so the gradient DDP averages over the ranks
    is the single process's gradient up to float32 summation order: the first step's gradients must agree
    to 1e-6. The weights after ``steps`` AdamW steps agree less tightly: a gradient whose exact value is 0
    (an attention key bias — softmax ignores a shift shared by all keys — or a bias just before a LayerNorm)
    is pure rounding noise (≈1e-11), and AdamW's division by √v turns noise into steps of up to ``lr``. So
    99.9 % of the weights must agree to 1e-6 and all of them to ``lr·steps/10``, while training must have
    moved the largest weight by at least ``lr·steps/2`` (so that the tolerance cannot hide a wrong update).

    Args:
        rank: a report of :func:`torchrun` (``gradients`` of the first step, final ``weights``).
        gradients, weights: the single process's first-step gradients and final weights, by name.
        initial: the weights both runs started from.
        lr, steps: the (constant) learning rate and the number of optimiser steps.
    """
    assert gradients and sorted(rank["gradients"]) == sorted(gradients)
    for name, gradient in gradients.items():
        torch.testing.assert_close(
            rank["gradients"][name], gradient, atol=1e-6, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert sorted(rank["weights"]) == sorted(weights)
    moved = max((weights[name] - initial[name]).abs().max().item() for name in weights)
    assert moved >= lr * steps / 2, f"training moved the weights by only {moved:.2e}"
    difference = torch.cat([(rank["weights"][name] - weights[name]).abs().flatten() for name in weights])
    assert (difference <= 1e-6).double().mean().item() >= 0.999, f"{int((difference > 1e-6).sum())} weights differ"
    for name, value in weights.items():
        torch.testing.assert_close(
            rank["weights"][name], value, atol=lr * steps / 10, rtol=0.0, msg=lambda m, n=name: f"{n}: {m}"
        )


def _train(loop: str, work_dir: Path, journal: WriteJournal) -> dict[str, Any]:
    """Train ``loop`` in this process (one rank of the run); returns what the rank reports."""
    config = ddp_config()
    with runtime(config.device, config.amp) as rt:
        if rt.world_size != 2:
            raise SystemExit(f"expected 2 ranks, got WORLD_SIZE={rt.world_size}")
        report: dict[str, Any] = {"rank": rt.rank}
        if loop == "episodic":
            journal.wrap(episodic, "save_checkpoint", "save_training_state")
            model, model_config = episodic_model()
            validation, first = ScriptedValidation(), FirstGradients(model)
            position = episodic.train_episodic(
                model=model, model_config=model_config, episodes=episodes_of(DDP_ITEMS), config=config, runtime=rt,
                work_dir=work_dir, fingerprint="ddp", validate=validation, metadata={"rank": rt.rank},
                on_step=lambda position: (validation.on_step(position), first.on_step(position)),
            )  # fmt: skip
            report |= {"weights": segmenter_weights(model), "validated": validation.calls, "gradients": first.gradients}
        else:
            journal.wrap(distill, "save_training_state")
            student, teacher = distill_parts()
            adapter = distill_adapter()
            first = FirstGradients(adapter)
            position = distill.distill_stage(
                student=student, adapter=adapter, data=TinyImages(DDP_ITEMS),
                targets=distill.online_targets(teacher, rt), config=config, runtime=rt,
                checkpoint=work_dir / "state.pt", fingerprint="ddp", on_step=first.on_step,
            )  # fmt: skip
            weights = {name: value.clone() for name, value in adapter.state_dict().items()}
            val_mse = distill.evaluate_mse(
                student=student, adapter=adapter, data=TinyImages(DDP_VAL_ITEMS),
                targets=distill.online_targets(teacher, rt), runtime=rt, batch_size=2,
            )  # fmt: skip
            report |= {"weights": weights, "gradients": first.gradients, "val_mse": val_mse}
    return report | {"history": position.history, "global_step": position.global_step}


def main(argv: Sequence[str] | None = None) -> int:
    """One rank: train the tiny ``episodic`` or ``distill`` setup, write ``OUT/rank<r>.pt``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=["episodic", "distill"])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # two ranks on a 2-core machine
    journal = WriteJournal()
    report = _train(args.loop, args.out / "work", journal)
    report["writes"] = journal.names
    torch.save(report, args.out / f"rank{report['rank']}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
