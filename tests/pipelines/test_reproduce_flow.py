"""The ``reproduce`` flow run for real under ``prefect_test_harness`` (no server): on a toy DVC project
written here (fast), and on a copy of this repository with the tiny profile (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.testing.utilities import prefect_test_harness

from pipelines.artifacts import SUMMARY_KEY, artifact_key, summary_markdown
from pipelines.dag import load_steps, select
from pipelines.distributed import FOLDS, REPORT, UPSTREAM
from pipelines.reproduce import RAN, RESTORED, UP_TO_DATE, StepFailedError, reproduce
from tests.pipelines.workspaces import tiny_workspace

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")

TOY_STEP = """\
import json, os, sys, time
from pathlib import Path

kind, fold = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
name = f"{kind}{fold}"
Path("timeline").mkdir(exist_ok=True)
rank = os.environ.get("RANK", "0")
if rank != "0":  # a step launched on several GPUs (torchrun): the other ranks only say that they ran
    seen = {"world": os.environ.get("WORLD_SIZE"), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    Path(f"timeline/{name}.rank{rank}.json").write_text(json.dumps(seen))
    sys.exit(0)
with open("timeline/attempts.log", "a") as log:
    log.write(name + "\\n")
print(f"step {name} starting", flush=True)
if Path(f"flaky/{name}").exists():
    Path(f"flaky/{name}").unlink()
    sys.exit("transient: the GPU fell off the bus")
if Path(f"bad/{name}").exists():
    print("error: fold is not in params.yaml", file=sys.stderr)
    sys.exit(2)
start = time.time()
if kind == "prepare":
    Path("data").mkdir()
    Path("data/table.csv").write_text("x\\n1\\n")
elif kind == "train":
    time.sleep(1.5)
    Path(f"models/fold{fold}").mkdir(parents=True)
    Path(f"models/fold{fold}/model.txt").write_text(fold)
elif kind == "evaluate":
    out = Path(f"outputs/evaluate/toy/fold{fold}_shot1")
    out.mkdir(parents=True)
    metrics = {"variant": "toy", "fold": int(fold), "shot": 1, "miou": 0.25 + 0.5 * int(fold), "fb_iou": 0.5,
               "episodes": 4, "baseline": {"miou": 0.1, "fb_iou": 0.3}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    rows = ["class_id,class_name,iou,intersection,union,episodes", "1,a,0.25,1,4,2", "2,b,nan,0,0,0"]
    (out / "per_class.csv").write_text("\\n".join(rows) + "\\n")
else:
    Path("report.md").write_text("report")
span = {"start": start, "end": time.time(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "stage": os.environ.get("DVC_STAGE"), "world": os.environ.get("WORLD_SIZE")}
Path(f"timeline/{name}.json").write_text(json.dumps(span))
"""

TOY_DVC_YAML = """\
stages:
  prepare:
    cmd: python step.py prepare
    deps:
      - step.py
    outs:
      - data
  train:
    foreach: ${folds}
    do:
      cmd: python step.py train ${item}
      deps:
        - step.py
        - data/table.csv
      outs:
        - models/fold${item}
  evaluate:
    foreach: ${folds}
    do:
      cmd: python step.py evaluate ${item}
      deps:
        - step.py
        - models/fold${item}
      outs:
        - outputs/evaluate/toy/fold${item}_shot1
  report:
    cmd: python step.py report
    deps:
      - outputs/evaluate
    outs:
      - report.md
"""


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect API (SQLite) for the whole session: flows, task runs and artifacts go there."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A DVC project (no git) with two folds: prepare → train@0, train@1 → evaluate@0, evaluate@1 → report."""
    assert dvc(["init", "--no-scm", "-q"], tmp_path).returncode == 0
    (tmp_path / "step.py").write_text(TOY_STEP)
    (tmp_path / "params.yaml").write_text("folds: [0, 1]\n")
    (tmp_path / "dvc.yaml").write_text(TOY_DVC_YAML)
    for folder in ("flaky", "bad"):
        (tmp_path / folder).mkdir()
    return tmp_path


@pytest.fixture
def other(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second workspace of the toy project (another machine); both use one DVC remote."""
    remote = tmp_path_factory.mktemp("remote")
    other = tmp_path_factory.mktemp("other")
    for name in ("step.py", "params.yaml", "dvc.yaml"):
        shutil.copy2(toy / name, other / name)
    assert dvc(["init", "--no-scm", "-q"], other).returncode == 0
    for workspace in (toy, other):
        assert dvc(["remote", "add", "-d", "shared", str(remote)], workspace).returncode == 0
    return other


def span(root: Path, name: str) -> dict:
    return json.loads((root / "timeline" / f"{name}.json").read_text())


def attempts(root: Path) -> list[str]:
    return (root / "timeline/attempts.log").read_text().split()


def artifacts_of(flow_run_id: UUID, keys: list[str]) -> dict:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    return {artifact.key: artifact for artifact in found}


def run_flow(**kwargs) -> tuple[dict[str, str], UUID]:
    """``reproduce`` with no retry delay; returns its outcome and flow run id."""
    state = reproduce(retry_delay_seconds=0, return_state=True, **kwargs)
    return state.result(), state.state_details.flow_run_id


@pytest.mark.slow
def test_every_step_runs_once_per_fold_side_by_side_and_dvc_records_it(prefect_api, toy):
    done, _ = run_flow(root=str(toy), gpus=["5", "6"])
    assert done == {name: RAN for name in ["prepare", "train@0", "train@1", "evaluate@0", "evaluate@1", "report"]}
    trains = [span(toy, "train0"), span(toy, "train1")]
    assert max(t["start"] for t in trains) < min(t["end"] for t in trains), "per-fold steps did not overlap"
    assert {t["gpu"] for t in trains} == {"5", "6"} and trains[0]["stage"] == "train@0"
    assert span(toy, "report")["start"] >= max(span(toy, f"evaluate{f}")["end"] for f in (0, 1))
    status = dvc(["status"], toy)
    assert "up to date" in status.stdout, status.stdout
    assert "Running stage" not in dvc(["repro"], toy).stdout


@pytest.mark.slow
def test_per_fold_tables_and_the_summary_are_artifacts(prefect_api, toy):
    _, flow_run_id = run_flow(root=str(toy), max_parallel=2)
    keys = [artifact_key("toy", fold, 1) for fold in (0, 1)]
    assert keys == ["fsdino-toy-fold0-shot1", "fsdino-toy-fold1-shot1"]
    found = artifacts_of(flow_run_id, [*keys, SUMMARY_KEY])
    assert set(found) == {*keys, SUMMARY_KEY}
    table = json.loads(found[keys[1]].data)
    assert table[0] == {"class_id": 1, "class_name": "a", "iou": 0.25, "intersection": 1, "union": 4, "episodes": 2}
    assert table[1]["iou"] is None and "mIoU 75.0%" in found[keys[1]].description
    assert found[keys[1]].type == "table" and found[SUMMARY_KEY].type == "markdown"
    assert "| toy | 1 | 25.0 | 75.0 | 50.0 |" in found[SUMMARY_KEY].data


@pytest.mark.slow
def test_a_step_given_two_gpus_runs_under_torchrun_holding_both(prefect_api, toy):
    done, _ = run_flow(root=str(toy), gpus=["0", "1", "2"], gpus_per_step={"train": 2})
    assert set(done.values()) == {RAN}
    for fold in (0, 1):
        rank0 = span(toy, f"train{fold}")
        rank1 = json.loads((toy / "timeline" / f"train{fold}.rank1.json").read_text())
        assert rank0["world"] == rank1["world"] == "2" and rank0["gpu"] == rank1["gpu"]
        assert len(set(rank0["gpu"].split(","))) == 2  # both ranks see the two GPUs the step holds
        evaluation = span(toy, f"evaluate{fold}")
        assert evaluation["world"] is None and evaluation["gpu"] in {"0", "1", "2"}  # one GPU, no torchrun
    first, second = span(toy, "train0"), span(toy, "train1")
    assert first["end"] <= second["start"] or second["end"] <= first["start"]  # 3 GPUs: one 2-GPU step at a time
    assert attempts(toy).count("train0") == attempts(toy).count("train1") == 1  # rank 0 logs its attempt


@pytest.mark.slow
def test_a_second_run_skips_what_dvc_finds_up_to_date(prefect_api, toy):
    run_flow(root=str(toy), max_parallel=2)
    (toy / "params.yaml").write_text("folds: [0, 1]\n")  # unchanged content: nothing to do
    again, _ = run_flow(root=str(toy), max_parallel=2)
    assert set(again.values()) == {UP_TO_DATE}
    (toy / "models/fold1/model.txt").write_text("tampered")
    third, _ = run_flow(root=str(toy), max_parallel=2)
    assert third == {**again, "train@1": RESTORED}, "the run-cache has train@1 for these deps"
    assert (toy / "models/fold1/model.txt").read_text() == "1"
    (toy / "step.py").write_text(TOY_STEP + "# changed\n")
    fourth, _ = run_flow(root=str(toy), max_parallel=2)
    assert [name for name, action in fourth.items() if action != RAN] == ["report"], "same evaluations"
    assert attempts(toy).count("train1") == 2


@pytest.mark.slow
def test_a_fold_sub_dag_runs_only_that_fold_and_its_upstream(prefect_api, toy):
    (toy / "one_fold.yaml").write_text("folds: [1]\n")
    done, _ = run_flow(root=str(toy), params="one_fold.yaml", stages=["evaluate@1"])
    assert (toy / "params.yaml").read_text() == "folds: [1]\n"
    assert list(done) == ["prepare", "train@1", "evaluate@1"]
    assert "train0" not in attempts(toy)
    assert "up to date" in dvc(["status", "evaluate@1", "--with-deps"], toy).stdout


@pytest.mark.slow
def test_a_transient_failure_is_retried_and_resumes(prefect_api, toy):
    (toy / "flaky/train1").touch()
    done, _ = run_flow(root=str(toy), max_parallel=2)
    assert done["train@1"] == RAN and done["report"] == RAN
    assert attempts(toy).count("train1") == 2 and attempts(toy).count("train0") == 1


@pytest.mark.slow
def test_bad_input_fails_at_once_naming_the_step_and_its_output(prefect_api, toy):
    (toy / "bad/train0").touch()
    with pytest.raises(StepFailedError, match=r"step train@0 failed with exit code 2") as failure:
        reproduce(root=str(toy), max_parallel=2, retry_delay_seconds=0)
    assert "error: fold is not in params.yaml" in str(failure.value)
    assert attempts(toy).count("train0") == 1, "an input error must not be retried"
    assert (toy / "outputs/evaluate/toy/fold1_shot1/metrics.json").is_file(), "the other fold carries on"
    assert not (toy / "report.md").exists()


@pytest.mark.slow
def test_another_workspace_restores_pushed_stages_instead_of_running_them(prefect_api, toy, other):
    run_flow(root=str(toy), max_parallel=2, push=True)
    done, _ = run_flow(root=str(other), max_parallel=2, pull=True, stages=["evaluate@1"])
    assert set(done.values()) == {RESTORED}
    assert not (other / "timeline").exists(), "nothing ran in the second workspace"
    assert (other / "outputs/evaluate/toy/fold1_shot1/metrics.json").is_file()
    assert "up to date" in dvc(["status", "evaluate@1", "--with-deps"], other).stdout


@pytest.mark.slow
def test_each_step_is_pushed_when_it_ran_so_a_failed_fold_loses_no_other(prefect_api, toy, other):
    (toy / "bad/train0").touch()
    with pytest.raises(StepFailedError, match="step train@0 failed"):
        reproduce(root=str(toy), max_parallel=2, push=True, retry_delay_seconds=0)
    done, _ = run_flow(root=str(other), max_parallel=2, pull=True, stages=["evaluate@1"])
    assert set(done.values()) == {RESTORED}  # prepare, train@1 and evaluate@1 came from the failed run's pushes
    assert not (other / "timeline").exists() and not (other / "models/fold0").exists()  # only its sub-DAG


def test_summary_markdown_has_a_row_per_variant_and_shot_with_the_mean():
    results = [
        {"variant": "full", "shot": 1, "fold": 0, "miou": 0.5},
        {"variant": "full", "shot": 1, "fold": 1, "miou": 0.7},
        {"variant": "full", "shot": 5, "fold": 0, "miou": 0.6},
    ]
    text = summary_markdown(results)
    assert "| variant | shot | fold 0 | fold 1 | mean |" in text
    assert "| full | 1 | 50.0 | 70.0 | 60.0 |" in text and "| full | 5 | 60.0 | – | 60.0 |" in text
    assert artifact_key("ba_svp_pcs", 2, 5) == "fsdino-ba-svp-pcs-fold2-shot5"


def load_flow(entrypoint: str) -> Flow:
    """The flow of a deployment entrypoint (relative to the repository root), loaded as `prefect deploy` does."""
    path, name = entrypoint.split(":")
    return load_flow_from_entrypoint(f"{ROOT / path}:{name}")


def test_the_deployments_match_the_flow_and_the_dag():
    from prefect.cli.deploy._models import PrefectYamlModel  # the schema `prefect deploy` validates with

    config = PrefectYamlModel.model_validate(yaml.safe_load((ROOT / "infra/prefect.yaml").read_text()))
    deployments = {deployment.name: deployment for deployment in config.deployments}
    assert {"fsdino-reproduce", "fsdino-upstream", "fsdino-fold-3", "fsdino-report", "fsdino-distributed"} <= set(
        deployments
    )
    steps = load_steps(ROOT)
    parent = deployments.pop("fsdino-distributed")  # the flow that runs the others, on its own pool
    flow = load_flow(parent.entrypoint)
    assert flow.name == "fsdino-distributed" and parent.work_pool.name == "control-pool"
    flow.validate_parameters(parent.parameters)
    children = {name.split("/")[1] for name in [UPSTREAM, *FOLDS, REPORT]}
    assert children <= set(deployments)
    for name, deployment in deployments.items():
        flow = load_flow(deployment.entrypoint)
        assert isinstance(flow, Flow) and flow.name == "fsdino-reproduce", name
        assert set(deployment.parameters) <= set(flow.parameters.properties), name
        flow.validate_parameters(deployment.parameters)
        assert deployment.work_pool.name == "gpu-pool", name
        if deployment.parameters.get("stages"):
            assert select(steps, deployment.parameters["stages"]), name
    weekly = deployments["fsdino-reproduce"].schedules[0]
    assert CronSchedule(cron=weekly.cron, timezone=weekly.timezone).cron == "0 2 * * 1"
    fold = [step.name for step in select(steps, deployments["fsdino-fold-2"].parameters["stages"], False)]
    assert fold and all(name.split("@")[1].split("-")[1] == "2" for name in fold)
    per_fold = {"train", "evaluate", "ablation_train", "ablation_evaluate"}
    chosen = {}
    for fold in range(4):
        targets = deployments[f"fsdino-fold-{fold}"].parameters["stages"]
        chosen[fold] = {step.name for step in select(steps, targets, False)}
    owners = {
        step.name: [fold for fold in chosen if step.name in chosen[fold]] for step in steps if step.group in per_fold
    }
    assert any(name.startswith("ablation_") for name in owners)  # the demo DAG has ablation runs on fold 0
    assert all(len(found) == 1 for found in owners.values()), owners  # each per-fold stage on one fold machine


@pytest.mark.slow
def test_the_tiny_profile_reproduces_through_the_flow(prefect_api, tmp_path):
    workspace = tiny_workspace(tmp_path)
    done, flow_run_id = run_flow(root=str(workspace), max_parallel=2)
    expected = [step.name for step in load_steps(workspace)]
    assert list(done) == expected and set(done.values()) == {RAN}
    assert {"distill_3", "report"} <= set(done) and any(name.startswith("evaluate@") for name in done)
    keys = [artifact_key("full", 0, 1), SUMMARY_KEY, "fsdino-crossdomain-fss", "fsdino-crossdomain-davis"]
    found = artifacts_of(flow_run_id, keys)
    assert set(found) == set(keys)
    assert "J&F" in found["fsdino-crossdomain-davis"].description
    assert {"sequence", "object", "J", "F"} <= set(json.loads(found["fsdino-crossdomain-davis"].data)[0])
    metrics = json.loads((workspace / "outputs/evaluate/full/fold0_shot1/metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0
    status = dvc(["status"], workspace)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
