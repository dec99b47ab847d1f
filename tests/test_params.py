from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from components.params import load_section
from fsdino.config import ModelConfig
from fsdino.errors import InputError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = 1


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_loads_a_section(tmp_path):
    assert load_section(Section, "train", write(tmp_path, "train:\n  epochs: 3\n")).epochs == 3


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(InputError, match=r"params\.yaml: train\.epoch: unknown key$"):
        load_section(Section, "train", write(tmp_path, "train:\n  epoch: 3\n"))


def test_wrong_type_is_named_with_the_value(tmp_path):
    with pytest.raises(InputError, match=r"params\.yaml: train\.epochs: .*integer.*'many'"):
        load_section(Section, "train", write(tmp_path, "train:\n  epochs: many\n"))


def test_model_config_checks_the_patch_multiple(tmp_path):
    path = write(tmp_path, "model:\n  image_size: 500\n")
    with pytest.raises(InputError, match=r"params\.yaml: model\.image_size: .*multiple of the patch size 14"):
        load_section(ModelConfig, "model", path)


def test_missing_section_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="missing section 'model'"):
        load_section(ModelConfig, "model", write(tmp_path, "train: {}\n"))
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_section(ModelConfig, "model", write(tmp_path, "model: [\n"))


def test_the_shipped_params_yaml_is_valid():
    from components.config import load_params

    params = load_params("params.yaml")
    assert params.model.image_size % 14 == 0


def test_unknown_top_level_section_is_named(tmp_path):
    from components.config import load_params

    with pytest.raises(InputError, match=r"params\.yaml: modle: unknown key"):
        load_params(write(tmp_path, "modle: {}\n"))


@pytest.mark.parametrize("name", ["demo", "paper-pascal", "paper-coco"])
def test_every_shipped_profile_validates(name):
    from components.profile import render

    rendered = yaml.safe_load(render(name))
    assert rendered["profile"] == name
    if name.startswith("paper"):
        assert rendered["model"]["image_size"] == 518 and rendered["distill"]["image_sizes"] == [126, 252, 518]
        assert rendered["distill"]["teacher"]["arch"] == "vit_h" and rendered["evaluate"]["episodes"] == 1000


@pytest.mark.parametrize(("name", "scale_range"), [("paper-pascal", [0.9, 1.1]), ("paper-coco", [0.8, 1.25])])
def test_paper_profiles_render_hdmnets_recipe(name, scale_range):
    from components.profile import PROFILES, render

    rendered = yaml.safe_load(render(name))
    for loop in (rendered["distill"]["loop"], rendered["train"]["loop"]):
        assert (loop["schedule"], loop["power"], loop["warmup_steps"], loop["lr"]) == ("poly", 0.9, 0, 0.001)
        assert loop["weight_decay"] == 0.01
    augment = rendered["train"]["augment"]
    assert augment == {"resize": "squash", "scale_range": scale_range, "rotate_p": 0.5, "blur_p": 0.5, "flip_p": 0.5}
    stage = rendered["benchmark"][rendered["benchmark"]["kind"]]
    assert (stage["exclude_novel"], stage["min_object_pixels"]) == (True, 2048)
    assert rendered["train"]["epoch"] == "images" and rendered["evaluate"]["shot_fusion"] == "model"
    if name == "paper-coco":
        assert rendered["crossdomain"]["fss"]["require_official_lists"] is True
    assert "1000 test episodes per fold is HSNet's and HDMNet's protocol (the paper gives no number)" in " ".join(
        line.lstrip("# ") for line in (PROFILES / f"{name}.yaml").read_text().splitlines() if line.startswith("#")
    )


def test_the_demo_keeps_its_own_recipe():
    from components.profile import render

    rendered = yaml.safe_load(render("demo"))
    assert rendered["train"]["loop"]["schedule"] == "cosine" and rendered["distill"]["loop"]["schedule"] == "constant"
    assert rendered["train"]["augment"]["resize"] == "pad_crop" and rendered["train"]["epoch"] == "pairs"
    assert rendered["benchmark"]["kind"] == "synthetic" and rendered["crossdomain"]["fss"]["root"] is None


def test_committed_params_yaml_is_the_rendered_demo_profile():
    from components.profile import render

    assert Path("params.yaml").read_text() == render("demo"), "re-render: python -m components.profile demo"


def test_every_param_dvc_yaml_declares_is_written_in_params_yaml():
    params = yaml.safe_load(Path("params.yaml").read_text())
    for stage in yaml.safe_load(Path("dvc.yaml").read_text())["stages"].values():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"dvc.yaml declares {key}, params.yaml lacks it"
                node = node[part]


def _demo(**changes):
    from components.config import Params
    from components.profile import render

    values = yaml.safe_load(render("demo"))
    for dotted, value in changes.items():
        node = values
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return Params.model_validate(values)


def test_an_ablation_run_that_is_also_a_train_run_is_refused():
    with pytest.raises(ValueError, match=r"ablation: \[\('full', 0, 1\)\] are already runs of train"):
        _demo(**{"ablation.variants": ["full"]})


def test_the_feature_memo_needs_flip_only_augmentation():
    with pytest.raises(ValueError, match=r"features\.memo needs flip-only training augmentation"):
        _demo(**{"train.augment.rotate_p": 0.5})
    assert not _demo(**{"features.memo": False, "train.augment.rotate_p": 0.5}).features.memo


def test_trains_covers_exactly_the_train_and_ablation_runs():
    params = _demo()
    assert params.trains("full", 3, 5) and params.trains("ba_pcs", 0, 1)
    assert not params.trains("ba_pcs", 1, 1) and not params.trains("full", 0, 2)


@pytest.mark.parametrize(
    ("dropped", "message"),
    [
        ("everything", r"missing section 'profile' \(\+13 more\): a params file holds every section"),
        ("benchmark", "missing section 'benchmark': a params file holds every section"),
        ("train", "missing section 'train': "),
        ("model", "missing section 'model': "),
    ],
)
def test_a_params_file_without_a_section_is_refused_naming_it(tmp_path, dropped, message):
    from components.config import load_params
    from components.profile import render

    values = {} if dropped == "everything" else yaml.safe_load(render("demo"))
    values.pop(dropped, None)
    path = write(tmp_path, yaml.safe_dump(values) if values else "")
    with pytest.raises(InputError, match=rf"^{path}: {message}.*`python -m components\.profile <name>`\)$"):
        load_params(path)


def test_a_missing_benchmark_section_stages_nothing(tmp_path, monkeypatch, capsys):
    from components import stage_benchmark
    from components.profile import render

    monkeypatch.chdir(tmp_path)
    values = yaml.safe_load(render("demo", Path(__file__).parents[1] / "profiles"))
    del values["benchmark"]
    assert stage_benchmark.main(["--params", str(write(tmp_path, yaml.safe_dump(values)))]) == 2
    assert capsys.readouterr().err.startswith("error: ") and sorted(p.name for p in tmp_path.iterdir()) == [
        "params.yaml"
    ]


@pytest.mark.parametrize("profile", ["demo", "paper-pascal", "paper-coco", "tests/pipeline/tiny_profile.yaml"])
def test_every_rendered_profile_is_a_complete_params_file(tmp_path, profile):
    """What a step reads must be complete: every shipped profile, and the tests' tiny one, renders so."""
    from components.config import load_params
    from components.profile import render

    profiles = Path("profiles")
    if profile.endswith(".yaml"):
        profiles = tmp_path / "profiles"
        profiles.mkdir()
        (profiles / "tiny.yaml").write_text(Path(profile).read_text())
        profile = "tiny"
    assert load_params(write(tmp_path, render(profile, profiles))).profile == profile
