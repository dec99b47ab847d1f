from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from fsdino.checkpoints import load_weights_file
from fsdino.config import EncoderConfig, TeacherConfig
from fsdino.errors import InputError
from fsdino.models.adapter import BottleneckAdapter
from fsdino.models.build import build_encoder
from fsdino.models.teacher_builder import build_teacher
from fsdino.training.config import LoopConfig
from fsdino.training.distill import (
    WithCachedTargets,
    WithTeacherImages,
    distill_stage,
    evaluate_mse,
    online_targets,
)
from fsdino.training.runtime import Runtime
from fsdino.training.teacher_cache import CacheSpec, TeacherTargets, build_shards, write_index
from tests.training.loops import (
    DDP_BATCH,
    DDP_EPOCHS,
    DDP_ITEMS,
    DDP_VAL_ITEMS,
    FirstGradients,
    TinyImages,
    assert_matches_single_process,
    ddp_config,
    distill_adapter,
    torchrun,
)

CPU = Runtime(torch.device("cpu"))


class Images(Dataset):
    """Deterministic smooth random images at a given square size."""

    def __init__(self, count: int, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.base = F.interpolate(torch.rand(count, 3, 8, 8, generator=generator), size=(64, 64), mode="bilinear")
        self.size = size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        image = F.interpolate(self.base[index : index + 1], size=(self.size, self.size), mode="area")[0]
        return {"image": image, "index": index, "key": f"sa_{index}"}


@pytest.fixture(scope="module")
def parts():
    student = build_encoder(EncoderConfig(name="vit_small_patch14_dinov2", weights="random"), 56, blocks=3)
    teacher = build_teacher(TeacherConfig(arch="tiny", image_size=64))
    return student, teacher


def fresh_adapter():
    torch.manual_seed(0)
    return BottleneckAdapter(in_dim=384)


def config(**overrides):
    return LoopConfig(**{"epochs": 3, "batch_size": 4, "checkpoint_every": 1, "seed": 3, **overrides})


def test_loss_goes_down(parts, tmp_path):
    student, teacher = parts
    data = WithTeacherImages(Images(12, 56), Images(12, 64))
    position = distill_stage(
        student=student, adapter=fresh_adapter(), data=data, targets=online_targets(teacher, CPU),
        config=config(epochs=4), runtime=CPU, checkpoint=tmp_path / "state.pt", fingerprint="a",
    )  # fmt: skip
    losses = [entry["loss"] for entry in position.history]
    assert len(losses) == 4 and losses[-1] < losses[0]


def build_cache(teacher, tmp_path, count: int, grids=(3, 4), shard_images: int = 4, teacher_id: str = "tiny@64"):
    """A sharded cache of ``Images(count, 64)``; returns (index path, keys)."""
    keys = tuple(f"sa_{i}" for i in range(count))
    spec = CacheSpec(teacher_id, grids, keys, shard_images)
    build_shards(lambda: teacher, Images(count, 64), spec, tmp_path / "shards", shards=range(spec.num_shards))
    return write_index(tmp_path / "index.json", tmp_path / "shards", spec), keys


def test_cached_targets_equal_online_targets(parts, tmp_path):
    _, teacher = parts
    build_cache(teacher, tmp_path, 6)
    keys = [f"sa_{i}" for i in range(6)]
    cache = TeacherTargets(tmp_path / "index.json", teacher_id="tiny@64", keys=keys, grid=3)
    batch = {"index": torch.tensor([4, 1]), "teacher_image": torch.stack([Images(6, 64)[i]["image"] for i in (4, 1)])}
    cached = torch.stack([cache[4], cache[1]]).float()  # rows 4 (second shard) and 1 (first)
    online = online_targets(teacher, CPU)(batch, 3)
    assert cached.shape == (2, 256, 3, 3) and cache[4].dtype == torch.float16
    assert torch.allclose(cached, online, atol=2e-3, rtol=1e-3)  # pooled in float32, stored fp16
    assert not torch.allclose(cached[0], cached[1])


def test_a_cache_of_another_teacher_manifest_or_grid_is_refused(parts, tmp_path):
    _, teacher = parts
    build_cache(teacher, tmp_path, 2)
    index = tmp_path / "index.json"
    with pytest.raises(InputError, match="built by teacher 'tiny@64', not 'vit_h@1024'"):
        TeacherTargets(index, teacher_id="vit_h@1024", keys=["sa_0", "sa_1"], grid=3)
    with pytest.raises(InputError, match="other images"):
        TeacherTargets(index, teacher_id="tiny@64", keys=["sa_0", "sa_9"], grid=3)
    with pytest.raises(InputError, match=r"holds grids \[3, 4\], not 9"):
        TeacherTargets(index, teacher_id="tiny@64", keys=["sa_0", "sa_1"], grid=9)


def test_cached_targets_come_in_the_batch_and_workers_change_nothing(parts, tmp_path):
    student, teacher = parts
    _, keys = build_cache(teacher, tmp_path, 8)
    data = WithCachedTargets(
        Images(8, 56), TeacherTargets(tmp_path / "index.json", teacher_id="tiny@64", keys=keys, grid=4)
    )
    runs = {}
    for workers in (0, 2):
        stats: dict[str, float] = {}
        adapter = fresh_adapter()
        distill_stage(
            student=student, adapter=adapter, data=data, targets=None, config=config(num_workers=workers, epochs=2),
            runtime=CPU, checkpoint=tmp_path / f"w{workers}.pt", fingerprint="w", stats=stats,
        )  # fmt: skip
        runs[workers] = adapter.state_dict()
        assert stats["steps"] == 4 and stats["wait_s"] > 0
    for name, value in runs[0].items():
        assert torch.equal(value, runs[2][name]), name
    mse = [
        evaluate_mse(student=student, adapter=fresh_adapter(), data=data, targets=None, runtime=CPU, num_workers=w)
        for w in (0, 2)
    ]
    assert mse[0] == mse[1] > 0


def test_resume_after_a_kill_gives_the_same_weights(parts, tmp_path):
    student, teacher = parts
    data = WithTeacherImages(Images(10, 56), Images(10, 64))
    targets = online_targets(teacher, CPU)
    common = {"student": student, "data": data, "targets": targets, "config": config(), "runtime": CPU}

    reference = fresh_adapter()
    distill_stage(adapter=reference, checkpoint=tmp_path / "a.pt", fingerprint="x", **common)

    class KilledError(Exception):
        pass

    def kill_at_step_4(position):
        if position.global_step == 4:  # mid-epoch (3 steps per epoch)
            raise KilledError

    interrupted = fresh_adapter()
    with pytest.raises(KilledError):
        distill_stage(
            adapter=interrupted, checkpoint=tmp_path / "b.pt", fingerprint="x", on_step=kill_at_step_4, **common
        )
    resumed = fresh_adapter()  # a new process starts from scratch and finds the checkpoint
    position = distill_stage(adapter=resumed, checkpoint=tmp_path / "b.pt", fingerprint="x", **common)
    assert position.global_step == 9
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(InputError, match="another configuration"):
        distill_stage(adapter=fresh_adapter(), checkpoint=tmp_path / "b.pt", fingerprint="y", **common)


def test_evaluate_mse_matches_the_loss_definition(parts):
    student, teacher = parts
    data = WithTeacherImages(Images(3, 56), Images(3, 64))
    adapter = fresh_adapter()
    targets = online_targets(teacher, CPU)
    mse = evaluate_mse(student=student, adapter=adapter, data=data, targets=targets, runtime=CPU, batch_size=2)
    images = torch.stack([data[i]["image"] for i in range(3)])
    batch = {"teacher_image": torch.stack([data[i]["teacher_image"] for i in range(3)])}
    with torch.no_grad():
        expected = F.mse_loss(adapter(student(images).layer3), targets(batch, 4)).item()
    assert mse == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_two_ddp_ranks_distil_like_one_process_with_the_same_global_batch(parts, tmp_path: Path) -> None:
    ranks = torchrun("distill", tmp_path)
    assert [report["rank"] for report in ranks] == [0, 1]

    student, teacher = parts  # the same builders as the ranks' (tests/training/loops.py: distill_parts)
    adapter = distill_adapter()
    initial = {name: value.clone() for name, value in adapter.state_dict().items()}
    first = FirstGradients(adapter)
    config = ddp_config()  # the ranks' config: the union of the ranks' k-th batches (2 each) is this one's k-th
    position = distill_stage(
        student=student, adapter=adapter, data=TinyImages(DDP_ITEMS), targets=online_targets(teacher, CPU),
        config=config, runtime=CPU, checkpoint=tmp_path / "single.pt", fingerprint="single", on_step=first.on_step,
    )  # fmt: skip
    steps = DDP_EPOCHS * DDP_ITEMS // DDP_BATCH
    assert position.global_step == ranks[0]["global_step"] == ranks[1]["global_step"] == steps == 4

    for name, value in ranks[0]["weights"].items():  # DDP keeps the ranks in lockstep
        assert torch.equal(ranks[1]["weights"][name], value), name
    weights = adapter.state_dict()
    assert_matches_single_process(ranks[0], first.gradients, weights, initial, lr=config.lr, steps=steps)
    for report in ranks:  # the epoch loss is averaged over the ranks
        losses = [row["loss"] for row in report["history"]]
        assert losses == pytest.approx([row["loss"] for row in position.history], rel=1e-5)

    # held-out MSE: each rank scored its batches, both got the sum in batch order, i.e. one process's value
    trained = distill_adapter()
    trained.load_state_dict(ranks[0]["weights"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks ran: the same kernels, so the same per-batch sums
    try:
        val_mse = evaluate_mse(
            student=student, adapter=trained, data=TinyImages(DDP_VAL_ITEMS), targets=online_targets(teacher, CPU),
            runtime=CPU, batch_size=2,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert ranks[0]["val_mse"] == ranks[1]["val_mse"] == val_mse > 0

    assert ranks[0]["writes"] == ["state.pt"] * 6 and ranks[1]["writes"] == []  # 4 steps + 2 epoch ends
    assert sorted(path.name for path in (tmp_path / "work").iterdir()) == ["state.pt"]
    state = load_weights_file(tmp_path / "work" / "state.pt")
    assert state["fingerprint"] == "ddp" and state["position"]["global_step"] == steps
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(state["states"]["adapter"][name], value), name
