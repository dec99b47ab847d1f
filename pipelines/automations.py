"""The server-side set-up a self-hosted Prefect needs for unattended runs: the zombie-run automation.

    python -m pipelines.automations                  # with PREFECT_API_URL set; idempotent
    python -m pipelines.automations --within 360

A machine that dies (power, kernel panic, ``kill -9`` of the whole box) takes the flow-run process with
it, so nothing reports the run's end: it stays ``Running`` forever and holds its concurrency slots. Flow
runs started by a worker send a ``prefect.flow-run.heartbeat`` event every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (Prefect's default 180, at least 30). This automation marks
a run ``Crashed`` when, after a heartbeat, neither another heartbeat nor a final state follows within
``within`` seconds (default: two heartbeats, 360 s); the ``distributed`` flow then runs that deployment
again (:mod:`pipelines.distributed`). Prefect Cloud has this built in ("Unresponsive run detection").
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from datetime import timedelta

NAME = "fsdino-crash-zombie-flow-runs"
DEFAULT_WITHIN_S = 360.0  # two missed heartbeats at Prefect's default frequency of 180 s


def zombie_automation(within_s: float = DEFAULT_WITHIN_S):  # -> prefect.automations.Automation
    """The automation (not yet created on the server)."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if within_s < 30:
        raise ValueError(f"within: expected at least 30 s (one heartbeat), got {within_s}")
    finals = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
    return Automation(
        name=NAME,
        description="Marks a flow run Crashed when its heartbeats stop (its machine died).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *finals},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_s:.0f} s: the flow run's machine is gone.",
            )
        ],
    )


def ensure_zombie_automation(within_s: float = DEFAULT_WITHIN_S):
    """Create the automation on the server in ``PREFECT_API_URL``, replacing one of the same name."""
    from prefect.automations import Automation

    with contextlib.suppress(ValueError):  # ValueError: not there yet
        Automation.read(name=NAME).delete()
    return zombie_automation(within_s).create()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.automations", description=__doc__.splitlines()[0])
    parser.add_argument("--within", type=float, default=DEFAULT_WITHIN_S, help="seconds without a heartbeat")
    args = parser.parse_args(argv)
    try:
        automation = ensure_zombie_automation(args.within)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"automation {automation.name} ({automation.id}): Crashed after {args.within:.0f} s without a heartbeat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
