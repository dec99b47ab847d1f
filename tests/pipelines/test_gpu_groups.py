"""How the flow gives a step several GPUs: slots taken all at once, the step's command under torchrun."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.__main__ import main
from pipelines.dag import Step
from pipelines.reproduce import Slots, launched, ranks_of

TRAIN = Step(name="train@full-0-1", cmd=("python -m components.train --fold 0",), deps=(), outs=())
DISTILL = Step(name="distill_2", cmd=("python -m components.distill --stage 2",), deps=(), outs=())


def test_a_step_takes_the_gpus_of_the_first_pattern_that_names_it():
    wanted = {"distill_*": 4, "train": 2, "train@full-0-1": 8}
    assert ranks_of(DISTILL, wanted) == 4 and ranks_of(TRAIN, wanted) == 2  # the group matched first
    assert ranks_of(TRAIN, {"evaluate": 2}) == ranks_of(TRAIN, None) == 1
    with pytest.raises(ValueError, match=r"gpus_per_step\['train'\]: expected a positive"):
        ranks_of(TRAIN, {"train": 0})


def test_the_command_is_launched_with_torchrun_on_several_ranks():
    assert launched("python -m components.train --fold 0", 1, "t") == "python -m components.train --fold 0"
    assert launched("python -m components.train --fold 0", 4, "t") == (
        "python -m torch.distributed.run --standalone --nproc-per-node=4 -m components.train --fold 0"
    )
    assert launched("python3 step.py train 1", 2, "t") == (
        "python3 -m torch.distributed.run --standalone --nproc-per-node=2 step.py train 1"
    )
    with pytest.raises(ValueError, match="step t: cannot launch 'make all' on 2 ranks"):
        launched("make all", 2, "t")


def test_slots_are_taken_all_at_once_and_given_back():
    slots = Slots(["0", "1", "2"])
    order: list[str] = []
    with slots.hold(2) as held:
        assert held == ["0", "1"]

        def wants_two() -> None:
            with slots.hold(2) as second:
                order.append(",".join(second))

        waiting = threading.Thread(target=wants_two)
        waiting.start()
        time.sleep(0.2)
        assert order == []  # one GPU is free, the step needs two: it waits without taking it
        with slots.hold(1) as single:  # …so a one-GPU step can still run beside
            assert single == ["2"]
        order.append("released")
    waiting.join(timeout=5)
    assert order == ["released", "2,0"]
    with pytest.raises(ValueError, match="asks for 4 slots; there are 3"), slots.hold(4):
        pass


def test_the_cli_refuses_a_bad_gpu_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--gpus-per-step", "train=zero"])
    assert exit_info.value.code == 2
    assert "'train=zero': expected STAGE=N with N a positive number of GPUs" in capsys.readouterr().err
