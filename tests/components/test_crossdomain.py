"""The cross-domain steps (Table 3): staging synthetic FSS-1000 / DAVIS-17, scoring a trained model on them,
the config's rules and one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from components import crossdomain, stage_benchmark, stage_crossdomain, stage_davis
from components.config import Params
from components.params import validate
from components.profile import PROFILES, render
from fsdino.checkpoints import save_checkpoint
from fsdino.data.benchmark import open_split
from fsdino.errors import InputError
from fsdino.evaluation.engine import EpisodeOutput
from fsdino.models.build import build_fsdino
from tests.conftest import tiny_config
from tests.data.mini_datasets import make_davis, make_fss

PROFILE_DIR = Path(__file__).resolve().parents[2] / PROFILES  # tests change the working folder


def _params(**crossdomain_overrides) -> Params:
    values = yaml.safe_load(render("demo", PROFILE_DIR))
    values["tracking"] = {"enabled": False}
    values["crossdomain"]["fss"]["synthetic"] = {"num_classes": 10, "images_per_class": 3, "size": 48}
    values["crossdomain"]["davis"]["synthetic"] = {"sequences": 2, "frames": 4, "height": 54, "width": 96}
    values["benchmark"]["synthetic"].update(num_images=40, min_size=64, max_size=80)  # the baseline's tuning data
    values["crossdomain"].update(crossdomain_overrides)
    return Params.model_validate(values)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    """A scratch project folder holding the one-shot fold-0 model (tiny, random) that Table 3 scores and the
    (small) training benchmark the baseline's threshold is tuned on."""
    monkeypatch.chdir(tmp_path)
    params = _params()
    stage_benchmark.run(params)
    torch.manual_seed(0)
    config = tiny_config("full")
    save_checkpoint(params.train.run_dir("full", 0, 1) / "best.pt", build_fsdino(config), config, {"epoch": 1})
    return params


def test_fss_is_staged_and_scored(workspace: Params) -> None:
    staged = stage_crossdomain.run(workspace, argparse.Namespace(target="fss"))
    assert staged["synthetic"] and staged["pairs"] == {"train": 15, "val": 6, "test": 9}
    assert Path("outputs/data/fss/raw/FSS-1000").is_dir()
    result = crossdomain.run(workspace, argparse.Namespace(target="fss"))
    assert result["episodes"] == 9 and 0 <= result["miou"] <= 1 and 0 <= result["fb_iou"] <= 1
    assert 0 <= result["baseline_miou"] <= 1  # the parameter-free baseline on the same episodes
    out = Path(result["out_dir"])
    assert out == Path("outputs/evaluate/crossdomain/fss")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "fss" and metrics["split"] == "test" and metrics["shot"] == 1
    assert metrics["classes"] == 3 and metrics["trained_on"] == "synthetic"
    assert metrics["split_rule"] == "seeded rule (seed 0)"  # the demo's split, which the report names
    assert set(metrics["baseline"]) == {"miou", "fb_iou", "classes", "threshold"}
    table = pd.read_csv(out / "per_class.csv")
    assert len(table) == 3 and table["episodes"].sum() == 9
    assert metrics["miou"] == pytest.approx(table["iou"].mean())
    assert len(metrics["overlays"]) == 4 and all((out / "overlays" / name).is_file() for name in metrics["overlays"])


def test_davis_is_staged_and_scored_without_first_and_last_frames(workspace: Params) -> None:
    stage_crossdomain.run(workspace, argparse.Namespace(target="davis"))
    manifest = json.loads(Path("outputs/data/davis/manifest.json").read_text())
    objects = sum(len(entry["objects"]) for entry in manifest["sequences"].values())
    result = crossdomain.run(workspace, argparse.Namespace(target="davis"))
    assert result["episodes"] == 3 * objects  # frames 2-4 of every object are queries
    table = pd.read_csv(Path(result["out_dir"]) / "per_object.csv")
    assert len(table) == objects and set(table["frames"]) == {2}  # frames 2 and 3: the last one is not scored
    assert result["J"] == pytest.approx(table["J"].mean()) and result["F"] == pytest.approx(table["F"].mean())
    assert result["J&F"] == pytest.approx((result["J"] + result["F"]) / 2)
    assert 0 <= result["baseline_J&F"] <= 1


def _davis_output(split, pair: tuple[str, int], logits: torch.Tensor) -> EpisodeOutput:
    source = split.source
    truth = torch.from_numpy(source.load_mask(source.index_of(pair[0]), pair[1])).long()
    return EpisodeOutput(0, pair[1], truth, logits > 0, logits, {}, 0)


def test_davis_frames_are_merged_into_one_label_map_before_scoring(tmp_path: Path) -> None:
    stage_davis.run(stage_davis.DavisStageConfig(root=make_davis(tmp_path / "DAVIS"), out=tmp_path / "davis"))
    split = open_split(tmp_path / "davis", "val")
    scores = crossdomain.DavisScores(split)
    everywhere = torch.full((24, 32), 5.0)  # object 1 claims the whole frame, confidently
    for image_id, object_id in reversed(split.pairs):  # any order: a frame is scored once it is complete
        truth = split.source.load_mask(split.source.index_of(image_id), object_id)
        logits = everywhere if object_id == 1 else torch.where(torch.from_numpy(truth) == 1, 1.0, -1.0)
        scores.update(_davis_output(split, (image_id, object_id), logits), image_id)
    summary, table = scores.result()
    # object 2 predicted exactly but less confidently loses every pixel: J = 0 and F = 0 in every scored frame
    # (bears frames 1-2, dogs-jump frame 1; last frames not scored), where scored alone it had J = F = 1
    objects = table.set_index(["sequence", "object"])
    assert objects.loc[("bears", 2), "J"] == 0.0 and objects.loc[("dogs-jump", 2), "F"] == 0.0
    assert objects.loc[("bears", 2), "frames"] == 2 and objects.loc[("dogs-jump", 2), "frames"] == 1
    assert 0 < objects.loc[("bears", 1), "J"] < 0.1 and summary["objects"] == 4
    incomplete = crossdomain.DavisScores(split)
    incomplete.update(_davis_output(split, split.pairs[0], everywhere), split.pairs[0][0])
    with pytest.raises(InputError, match="lacks predictions of some of its objects"):
        incomplete.result()


def test_errors_name_what_is_missing(workspace: Params, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest not found"):
        crossdomain.run(workspace, argparse.Namespace(target="fss"))
    only_davis = _params(targets=["davis"])
    with pytest.raises(InputError, match="'fss' is not a target"):
        stage_crossdomain.run(only_davis, argparse.Namespace(target="fss"))
    (tmp_path / "outputs/train/full/fold0_shot1/best.pt").unlink()
    with pytest.raises(InputError, match=r"best\.pt: no trained model"):
        crossdomain.run(workspace, argparse.Namespace(target="fss"))


def test_main_exits_2_with_one_line(workspace: Params, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(workspace.model_dump(mode="json")))
    assert crossdomain.main(["--target", "davis", "--params", str(params_file)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "manifest not found" in error and "\n" not in error


def test_the_paper_profile_stops_without_hsnets_fss_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    values = yaml.safe_load(render("paper-coco", PROFILE_DIR))
    assert values["crossdomain"]["fss"]["require_official_lists"] is True
    values["crossdomain"]["fss"]["root"] = str(make_fss(tmp_path / "fss"))  # FSS-1000 without its lists
    values["tracking"] = {"enabled": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    assert stage_crossdomain.main(["--target", "fss", "--params", "params.yaml"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: {tmp_path / 'fss' / 'splits' / 'fss' / 'trn.txt'}: HSNet's FSS-1000 class list not found "
        "(require_official_lists: no seeded split; copy trn.txt, val.txt and test.txt from HSNet's data/splits/fss/)"
    )
    assert not Path("outputs/data/fss/manifest.json").exists()


def test_config_rules() -> None:
    values = yaml.safe_load(render("demo", PROFILE_DIR))
    values["crossdomain"]["fss"]["root"] = "data/fss"  # and synthetic too
    with pytest.raises(InputError, match=r"crossdomain\.fss.*exactly one of root .* got both"):
        validate(Params, values, "params.yaml")
    values["crossdomain"]["fss"].update(root=None, synthetic=None)
    with pytest.raises(InputError, match="got neither"):
        validate(Params, values, "params.yaml")
    values = yaml.safe_load(render("demo", PROFILE_DIR))
    values["crossdomain"]["fold"] = 3
    values["train"]["shots"] = [5]
    values["registry"]["shot"] = 5
    with pytest.raises(InputError, match="crossdomain: \\(full, fold 3, 1-shot\\) is not a run"):
        validate(Params, values, "params.yaml")
    values["crossdomain"]["targets"] = []  # no targets: no model needed
    assert validate(Params, values, "params.yaml").crossdomain.targets == []


def test_paper_profiles_point_at_the_official_layouts() -> None:
    coco = validate(Params, yaml.safe_load(render("paper-coco", PROFILE_DIR)), "paper-coco")
    assert coco.crossdomain.targets == ["fss", "davis"]
    assert coco.crossdomain.fss.raw_root(Path("x")) == Path("data/fss") and coco.crossdomain.fss.synthetic is None
    assert coco.crossdomain.davis.raw_root(Path("x")) == Path("data/DAVIS")
    pascal = validate(Params, yaml.safe_load(render("paper-pascal", PROFILE_DIR)), "paper-pascal")
    assert pascal.crossdomain.targets == []  # Table 3 uses the COCO-20i model
