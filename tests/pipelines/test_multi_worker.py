"""One reproduction spread over two machines, for real: ``prefect server start`` on 127.0.0.1, a process
work pool, ``prefect deploy`` of a test copy of infra/prefect.yaml, two workers in two clones of one git
origin sharing one DVC remote (moto's S3 server), an MLflow server, and the ``distributed`` parent flow.
Half-way through the first fold's training the machine running it dies (``kill -9`` of its worker and of
every process under it); the zombie automation marks the run Crashed, the parent runs the fold again,
and the restarted worker on the same workspace resumes training from the step's checkpoint.

The figures (what each worker ran and restored, bytes pulled, wall times) are written to
``multi_worker.json`` in the test's folder and printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from mlflow import MlflowClient
from moto.server import ThreadedMotoServer

from benchmarks.servers import free_port, running, tail
from pipelines.artifacts import SUMMARY_KEY, artifact_key
from tests.components.mlflow_fixtures import migrated_store, subprocess_env
from tests.pipelines.workspaces import ROOT, tiny_workspace

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FLOW = "fsdino-reproduce"
DEPLOYMENTS = ["fsdino-upstream", "fsdino-fold-0", "fsdino-fold-1", "fsdino-report"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "fsdino-dvc"
EPOCHS = 8  # long enough to kill the fold-0 training between two epochs
KILLED = "train@full-0-1"
STATE = Path("outputs/.work/train/full/fold0_shot1/state.pt")
HEARTBEAT_S, ZOMBIE_AFTER_S = 30, 45  # Prefect's smallest heartbeat interval; the automation's window
PROFILE_CHANGES = {"train": {"folds": [0, 1], "loop": {"epochs": EPOCHS}}}


def prefect_cli() -> str:
    return str(Path(sys.executable).parent / "prefect")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def call(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (read from /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def kill_machine(worker: subprocess.Popen) -> int:
    """SIGKILL the worker and everything under it, as when its machine dies (stopped first, so that no
    process can react to the others' deaths); returns how many processes were killed."""
    victims = [worker.pid, *descendants(worker.pid)]
    for signal_number in (signal.SIGSTOP, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)
    worker.wait(timeout=30)
    return len(victims)


def saved_epoch(state: Path) -> int:
    """The epochs a training checkpoint has finished (0 when it cannot be read yet)."""
    import torch

    try:
        return int(torch.load(state, map_location="cpu", weights_only=False)["position"]["epoch"])
    except Exception:  # being written (atomic rename) or absent
        return 0


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)  # fmt: skip
    try:
        yield endpoint
    finally:
        server.stop()


def deployments_for_test(target: Path) -> Path:
    """infra/prefect.yaml with the four deployments of a spread run, sized for this CPU: torchrun on two
    ranks for the teacher cache, one task retry without delay."""
    config = yaml.safe_load((ROOT / "infra/prefect.yaml").read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] in DEPLOYMENTS]
    for deployment in config["deployments"]:
        parameters = deployment["parameters"]
        parameters.update(retries=1, retry_delay_seconds=0, gpus=["0", "1"])
        if deployment["name"] == "fsdino-upstream":
            parameters["gpus_per_step"] = {"teacher_cache": 2}
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


class Workers:
    """The ``prefect worker`` processes, one per workspace, restartable."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.processes = env, logs, {}
        self.log_files: list = []

    def start(self, name: str, workspace: Path) -> subprocess.Popen:
        env = {**self.env, "FSDINO_WORKSPACE": str(workspace)}
        log = open(self.logs / f"{name}-{len(self.log_files)}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        self.log_files.append(log)
        command = [prefect_cli(), "worker", "start", "--pool", "gpu-pool", "--limit", "1", "--name", name]
        process = subprocess.Popen(command, cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def stop_all(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            for pid in [process.pid, *descendants(process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(timeout=30)
        for log in self.log_files:
            log.close()


def flow_runs(client, deployment_names: list[str]) -> dict[str, list]:
    """``{deployment name: its flow runs, oldest first}``."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    out = {}
    for name in deployment_names:
        found = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])), sort=FlowRunSort.START_TIME_ASC
        )
        out[name] = sorted(found, key=lambda run: run.created)
    return out


def log_lines(client, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    lines, offset = [], 0
    while True:
        page = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200, offset=offset, sort=LogSort.TIMESTAMP_ASC,
        )  # fmt: skip
        lines += [log.message for log in page]
        if len(page) < 200:
            return lines
        offset += 200


def outcomes_of(lines: list[str]) -> tuple[str, dict[str, str]]:
    """(worker, {stage: what it did}) from a ``reproduce`` flow run's log."""
    worker = next(line.rsplit("worker ", 1)[1] for line in lines if line.startswith("workspace "))
    done = {}
    for line in lines:
        stage, _, action = line.partition(": ")
        if action in ("ran", "up to date", "restored from run-cache"):
            done[stage] = action
    return worker, done


def lock_sizes(workspace: Path) -> dict[str, int]:
    """Bytes of each stage's outputs as ``dvc.lock`` records them."""
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {name: sum(out.get("size", 0) for out in stage.get("outs", [])) for name, stage in lock.items()}


def test_a_reproduction_spread_over_two_workers_survives_a_machine_dying(tmp_path: Path, tmp_path_factory) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    started = time.monotonic()
    source = tiny_workspace(tmp_path / "source", PROFILE_CHANGES)
    origin = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(source), str(origin), cwd=tmp_path)
    commit = git("rev-parse", "HEAD", cwd=source)
    clones = {name: tmp_path / f"machine-{name}" for name in ("a", "b")}
    logs = tmp_path / "logs"
    logs.mkdir()

    prefect_port, mlflow_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    env = subprocess_env(
        **CREDENTIALS, PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S), PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        MLFLOW_TRACKING_URI=mlflow_url,
    )  # fmt: skip
    mlflow_db = migrated_store(tmp_path_factory, tmp_path / "mlflow")
    mlflow_server = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{mlflow_db}",
        "--artifacts-destination", (tmp_path / "mlflow-artifacts").as_uri(), "--host", "127.0.0.1",
        "--port", str(mlflow_port), "--workers", "1",
    ]  # fmt: skip
    prefect_server = [prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
    workers = Workers(env, logs)
    report: dict = {"commit": commit}
    with (
        temporary_settings({PREFECT_API_URL: api}),  # this process's client talks to the same server
        s3_server() as endpoint,
        running(prefect_server, env, f"{api}/health", logs / "prefect-server.log", timeout_s=180),
        running(mlflow_server, env, f"{mlflow_url}/health", logs / "mlflow-server.log", timeout_s=120),
    ):
        report["servers_up_s"] = round(time.monotonic() - started, 1)
        for clone in clones.values():
            git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
            dvc = [sys.executable, "-m", "dvc"]
            call([*dvc, "remote", "add", "--local", "-d", "shared", f"s3://{BUCKET}/cache"], clone, env)
            call([*dvc, "remote", "modify", "--local", "shared", "endpointurl", endpoint], clone, env)
        call([prefect_cli(), "work-pool", "create", "gpu-pool", "--type", "process"], tmp_path, env)
        call([sys.executable, "-m", "pipelines.automations", "--within", str(ZOMBIE_AFTER_S)], ROOT, env)
        deployments = deployments_for_test(clones["a"] / "prefect.test.yaml")
        deploy_env = {**env, "FSDINO_WORKSPACE": "/the/deployers/checkout"}  # must not reach the workers
        call(
            [prefect_cli(), "--no-prompt", "deploy", "--all", "--prefect-file", str(deployments)],
            clones["a"],
            deploy_env,
        )
        for name, clone in clones.items():
            workers.start(f"worker-{name}", clone)
        parent_command = [
            sys.executable, "-m", "pipelines.distributed", "--commit", commit, "--tracking-uri", mlflow_url,
            "--folds", f"{FLOW}/fsdino-fold-0", f"{FLOW}/fsdino-fold-1", "--retries", "1", "--retry-delay", "0",
            "--poll-interval", "2",
        ]  # fmt: skip
        parent_log = open(logs / "parent.log", "wb")  # noqa: SIM115
        parent = subprocess.Popen(parent_command, cwd=tmp_path, env=env, stdout=parent_log, stderr=subprocess.STDOUT)
        try:
            # --- the machine training fold 0 dies between two epochs ---------------------------------------
            deadline = time.monotonic() + 900
            victim = None
            while victim is None:
                assert parent.poll() is None, f"the parent flow ended early:\n{tail(logs / 'parent.log')}"
                assert time.monotonic() < deadline, "fold 0 never reached its second epoch"
                victim = next((n for n, c in clones.items() if 1 <= saved_epoch(c / STATE) < EPOCHS - 1), None)
                time.sleep(0.2)
            other = "b" if victim == "a" else "a"
            report["killed"] = {"machine": victim, "epochs_done": saved_epoch(clones[victim] / STATE)}
            report["killed"]["processes"] = kill_machine(workers.processes[f"worker-{victim}"])
            killed_at = time.monotonic()
            # the other machine's worker stops taking work until the retry has landed, so that it lands on
            # the dead machine's workspace once that machine is back (its flow run, if any, goes on)
            os.kill(workers.processes[f"worker-{other}"].pid, signal.SIGSTOP)
            workers.start(f"worker-{victim}", clones[victim])
            with get_client(sync_client=True) as client:
                while len(flow_runs(client, ["fsdino-fold-0"])["fsdino-fold-0"]) < 2:
                    assert time.monotonic() - killed_at < 600, "the crashed fold was never run again"
                    time.sleep(1)
                retry = flow_runs(client, ["fsdino-fold-0"])["fsdino-fold-0"][1]
                while client.read_flow_run(retry.id).state.is_scheduled():
                    time.sleep(1)
            report["retry_started_after_s"] = round(time.monotonic() - killed_at, 1)
            os.kill(workers.processes[f"worker-{other}"].pid, signal.SIGCONT)
            assert parent.wait(timeout=900) == 0, tail(logs / "parent.log")
        finally:
            if parent.poll() is None:
                parent.kill()
            parent_log.close()
            workers.stop_all()
        report["wall_s"] = round(time.monotonic() - started, 1)

        with get_client(sync_client=True) as client:
            runs = flow_runs(client, DEPLOYMENTS)
            per_run = {}
            for deployment, found in runs.items():
                for run in found:
                    per_run[run.name] = (deployment, run.state.type.value, *outcomes_of(log_lines(client, run.id)))
            crashed, resumed = runs["fsdino-fold-0"]
            resumed_lines = log_lines(client, resumed.id)
            keys = [artifact_key("full", 0, 1), artifact_key("full", 1, 1), SUMMARY_KEY]
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        tracking = MlflowClient(mlflow_url)
        mlflow_runs = tracking.search_runs([experiment.experiment_id for experiment in tracking.search_experiments()])

    # --- what ran where --------------------------------------------------------------------------------
    workspaces = {f"worker-{name}": clone for name, clone in clones.items()}
    ran: dict[str, list[str]] = {}
    report["flow_runs"] = {}
    for name, (deployment, state, worker, done) in per_run.items():
        assert worker in workspaces, (name, worker)  # each run named the worker that took it
        for stage, action in done.items():
            if action == "ran":
                ran.setdefault(stage, []).append(worker)
        sizes = lock_sizes(workspaces[worker])
        restored = [stage for stage, action in done.items() if action == "restored from run-cache"]
        report["flow_runs"][name] = {
            "deployment": deployment, "state": state, "worker": worker,
            "ran": sorted(stage for stage, action in done.items() if action == "ran"),
            "restored": sorted(restored), "restored_bytes": sum(sizes.get(stage, 0) for stage in restored),
        }  # fmt: skip
    report_path = tmp_path / "multi_worker.json"
    report_path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))

    from pipelines.dag import load_steps

    every_stage = {step.name for step in load_steps(clones["a"])}
    assert set(ran) == every_stage, every_stage ^ set(ran)
    assert all(len(workers_) == 1 for workers_ in ran.values()), ran  # once across both machines
    assert crashed.state.is_crashed() and resumed.state.is_completed()
    assert per_run[resumed.name][2] == f"worker-{victim}"  # the retry landed on the dead machine's workspace

    # the killed step resumed from its checkpoint: no epoch before the saved ones was trained again
    epochs_logged = [
        int(line.split("train epoch ", 1)[1].split("/", 1)[0]) for line in resumed_lines if "train epoch " in line
    ]
    assert epochs_logged and min(epochs_logged) == report["killed"]["epochs_done"] + 1, sorted(set(epochs_logged))

    # a machine that did not run upstream restored it from the DVC remote's run-cache
    upstream_worker = per_run[runs["fsdino-upstream"][0].name][2]
    restorers = [run for run in per_run.values() if run[2] != upstream_worker]
    assert any(run[3].get("distill_3") == "restored from run-cache" for run in restorers), per_run

    assert {artifact.key for artifact in artifacts} == set(keys)
    parent_runs = [run for run in mlflow_runs if run.info.run_name.startswith("distributed-")]
    assert len(parent_runs) == 1 and parent_runs[0].info.status == "FINISHED"
    nested = [run for run in mlflow_runs if "mlflow.parentRunId" in run.data.tags]
    assert nested and {run.data.tags["mlflow.parentRunId"] for run in nested} == {parent_runs[0].info.run_id}
    assert {run.data.tags.get("fsdino.stage") for run in nested} >= {"train@full-0-1", "train@full-1-1"}

    # each machine's dvc.lock matches its outputs for every stage it ran or restored
    for worker, clone in workspaces.items():
        touched = sorted({s for run in per_run.values() if run[2] == worker for s in run[3]})
        status = call([sys.executable, "-m", "dvc", "status", *touched], clone, env)
        assert "up to date" in status, (worker, status)
    assert git("rev-parse", "HEAD", cwd=clones["b"]) == commit
