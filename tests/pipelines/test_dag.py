"""The stage graph read from dvc.yaml: the repository's own, and a small one written here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.__main__ import main
from pipelines.dag import Step, group_of, link, load_steps, overlaps, select, topological_order

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")


@pytest.fixture(scope="module")
def steps() -> list[Step]:
    return load_steps(ROOT)


def by_name(steps: list[Step]) -> dict[str, Step]:
    return {step.name: step for step in steps}


def position(steps: list[Step]) -> dict[str, int]:
    return {step.name: index for index, step in enumerate(steps)}


def test_the_distillation_stages_run_in_order(steps):
    stages = by_name(steps)
    order = position(steps)
    assert order["distill_1"] < order["distill_2"] < order["distill_3"]
    assert "distill_1" in stages["distill_2"].upstream and "distill_2" in stages["distill_3"].upstream
    assert stages["distill_1"].cmd == ("python -m components.distill --stage 1",)


def test_every_training_depends_on_distillation_and_the_benchmark(steps):
    trains = [step for step in steps if step.group == "train"]
    assert trains and all(step.expanded for step in trains)
    for step in trains:
        assert {"distill_3", "benchmark"} <= step.upstream, step.name


def test_each_evaluation_depends_on_its_own_training(steps):
    evaluations = [step for step in steps if group_of(step) == "evaluate"]
    assert evaluations
    for step in evaluations:
        key = step.name.split("@", 1)[1]
        assert f"train@{key}" in step.upstream
        assert not {s for s in step.upstream if s.startswith("train@")} - {f"train@{key}"}


def test_the_report_waits_for_every_evaluation(steps):
    evaluations = {step.name for step in steps if step.group == "evaluate"}
    report = by_name(steps)["report"]
    assert evaluations <= report.upstream
    assert position(steps)["report"] > max(position(steps)[name] for name in evaluations)


def test_upstream_matches_dvcs_own_graph(steps):
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        edges = {(a.addressing, b.addressing) for a, b in repo.index.graph.edges}
    ours = {(step.name, parent) for step in steps for parent in step.upstream}
    assert ours == edges


def test_a_fold_sub_dag_keeps_its_upstream_only(steps):
    chosen = [step.name for step in select(steps, ["train@*-2-*", "evaluate@*-2-*"])]
    assert {"distill_3", "benchmark", "weights", "sa1b", "teacher_cache"} <= set(chosen)
    per_fold = [name for name in chosen if "@" in name]
    assert per_fold and all(name.split("@")[1].split("-")[1] == "2" for name in per_fold)
    assert "report" not in chosen
    assert select(steps, ["distill_2"], with_upstream=False) == [by_name(steps)["distill_2"]]


def test_a_group_target_selects_all_its_items(steps):
    chosen = {step.name for step in select(steps, ["evaluate"], with_upstream=False)}
    assert chosen == {step.name for step in steps if step.group == "evaluate"}


def test_an_unknown_target_names_itself(steps):
    with pytest.raises(ValueError, match="'nope'"):
        select(steps, ["nope"])
    with pytest.raises(ValueError, match=re.escape("'train@full-9-1' is not in dvc.yaml")):
        select(steps, ["train@*-0-*", "train@full-9-1"])  # a name must exist even beside other targets


def test_a_glob_may_match_nothing_beside_a_target_that_matches(steps):
    fold = select(steps, ["train@*-1-*", "ablation_train@*-1-*"], with_upstream=False)  # no ablation on fold 1
    assert [step.name for step in fold] == ["train@full-1-1", "train@full-1-5"]
    with pytest.raises(ValueError, match=re.escape("no stage of dvc.yaml matches 'ablation_train@*-1-*'")):
        select(steps, ["ablation_train@*-1-*"])


def test_overlapping_paths():
    assert overlaps("outputs/train", "outputs/train/full/fold0_shot1")
    assert overlaps("outputs/train/full/fold0_shot1/best.pt", "outputs/train/full/fold0_shot1/")
    assert not overlaps("outputs/train", "outputs/training")


def test_link_orders_steps_by_their_paths_not_their_listing():
    report = Step("report", ("r",), deps=("out/b",), outs=("report.html",))
    second = Step("b", ("b",), deps=("out/a/x.txt",), outs=("out/b",))
    first = Step("a", ("a",), deps=(), outs=("out/a",))
    linked = link([report, second, first])
    assert [step.name for step in linked] == ["a", "b", "report"]
    assert linked[2].upstream == {"b"} and linked[1].upstream == {"a"}


def test_a_cycle_is_refused():
    a = Step("a", ("a",), deps=("b.txt",), outs=("a.txt",), upstream=frozenset({"b"}))
    b = Step("b", ("b",), deps=("a.txt",), outs=("b.txt",), upstream=frozenset({"a"}))
    with pytest.raises(ValueError, match="cycle"):
        topological_order([a, b])


SMALL_DVC_YAML = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py]
    outs: [data]
  fit:
    foreach: ${folds}
    do:
      cmd:
        - python fit.py ${item}
        - echo done ${item}
      deps: [data/table.csv]
      params: [lr]
      outs:
        - models/fold${item}
  summary:
    cmd: python summary.py
    deps: [models]
    outs: [summary.md]
"""


def test_the_graph_follows_whatever_dvc_yaml_says(tmp_path):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("folds: [3, 7]\nlr: 0.1\n")
    (tmp_path / "dvc.yaml").write_text(SMALL_DVC_YAML)
    steps = load_steps(tmp_path)
    assert [step.name for step in steps] == ["prepare", "fit@3", "fit@7", "summary"]
    fit = by_name(steps)["fit@7"]
    assert fit.cmd == ("python fit.py 7", "echo done 7")
    assert fit.deps == ("data/table.csv",) and fit.outs == ("models/fold7",)
    assert fit.upstream == {"prepare"} and fit.group == "fit"
    assert by_name(steps)["summary"].upstream == {"fit@3", "fit@7"}


def test_the_cli_lists_a_sub_dag_and_refuses_unknown_stages(capsys):
    assert main(["--root", str(ROOT), "--list", "--stages", "evaluate@*-1-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    name, arrow, *upstream = lines[-1].split()
    assert name.startswith("evaluate@") and name.endswith("-1-1") and arrow == "<-"
    assert f"train@{name.split('@')[1]}" in " ".join(upstream)
    assert main(["--root", str(ROOT), "--list", "--stages", "nope"]) == 2
    assert "error: stage 'nope'" in capsys.readouterr().err
