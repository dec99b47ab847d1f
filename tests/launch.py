"""Running a pipeline step as its own process in the tests (plain, or under ``torchrun``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: ``python`` arguments that launch the rest of a command on 2 ranks of this machine (gloo on the CPU)
TORCHRUN_2 = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def run_step(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python <command>`` in ``cwd`` as a pipeline step runs (launcher variables of this process
    removed, this checkout importable, one thread per process, no progress bars); a non-zero exit fails
    the calling test with the step's output."""
    env = {name: value for name, value in os.environ.items() if name not in LAUNCHER}
    env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    env |= {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{command} exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result
