"""Epoch progress bars: in a log one whole line per interval with the count reached (the training loop's
per-step ``set_postfix`` used to redraw at every step with a stale ``0/12``), in a terminal a live bar,
and ``TQDM_DISABLE=1`` honoured."""

from __future__ import annotations

import os
import re
import select
import sys
import termios
import time

import pytest
import torch

from fsdino.training import runtime as runtime_module
from fsdino.training.distill import WithTeacherImages, distill_stage, online_targets
from fsdino.training.runtime import Runtime, epoch_progress
from tests.training.test_distill import Images, config, fresh_adapter
from tests.training.test_distill import parts as parts

CPU = Runtime(torch.device("cpu"))
COUNT = re.compile(r"(\d+)/12\b")


def distil_twelve_steps(parts, tmp_path) -> None:
    """One epoch of 12 one-image steps of the real distillation loop (it calls ``set_postfix`` every step)."""
    student, teacher = parts
    data = WithTeacherImages(Images(12, 56), Images(12, 64))
    distill_stage(
        student=student, adapter=fresh_adapter(), data=data, targets=online_targets(teacher, CPU),
        config=config(epochs=1, batch_size=1, checkpoint_every=100), runtime=CPU, checkpoint=tmp_path / "s.pt",
        fingerprint="p",
    )  # fmt: skip


def bar_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if "distill epoch" in line]


@pytest.fixture
def log_stderr(capsys, monkeypatch):
    """stderr as a log file (pytest's capture: not a terminal); ``.getvalue()`` reads what was written."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)

    class Log:
        @staticmethod
        def getvalue() -> str:
            return capsys.readouterr().err

    return Log


def test_a_log_gets_whole_lines_not_a_redraw_per_step(parts, tmp_path, log_stderr):
    distil_twelve_steps(parts, tmp_path)
    text = log_stderr.getvalue()
    assert "\r" not in text, text
    lines = bar_lines(text)
    assert len(lines) == 2, lines  # the start and the epoch's end: no 30 s passed in between
    assert [COUNT.search(line).group(1) for line in lines] == ["0", "12"]
    assert "mse=" in lines[-1]  # the last step's postfix, shown at the next redraw


def test_each_log_line_has_the_count_reached(parts, tmp_path, log_stderr, monkeypatch):
    monkeypatch.setattr(runtime_module, "LOG_INTERVAL_S", 0.0)  # a line at every redraw
    distil_twelve_steps(parts, tmp_path)
    counts = [int(COUNT.search(line).group(1)) for line in bar_lines(log_stderr.getvalue())]
    assert len(counts) >= 6 and counts[-1] == 12, counts
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts  # never stuck, never repeated


def test_a_terminal_gets_a_live_bar(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    leader, follower = os.openpty()
    termios.tcsetwinsize(follower, (24, 120))  # a new pty is 0 columns wide: tqdm would draw nothing
    terminal = os.fdopen(follower, "w")
    monkeypatch.setattr(sys, "stderr", terminal)

    def slow():
        for item in range(12):
            time.sleep(0.05)
            yield item

    bar = epoch_progress(slow(), 12, 0, "live", CPU)
    for item in bar:
        bar.set_postfix(step=item)
    terminal.flush()
    chunks = []
    while select.select([leader], [], [], 0.5)[0]:
        chunks.append(os.read(leader, 1 << 16))
    text = b"".join(chunks).decode()
    terminal.close()
    os.close(leader)
    draws = [draw for draw in text.split("\r") if "live" in draw]
    counts = [int(m.group(1)) for draw in draws if (m := COUNT.search(draw))]
    assert "\n" not in text.replace("\r\n", "") and len(draws) >= 3, text  # redrawn in place
    assert counts == sorted(counts) and counts[-1] >= 6, counts
    assert any("step=" in draw for draw in draws)


def test_tqdm_disable_silences_the_epoch_bar(parts, tmp_path, log_stderr, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    distil_twelve_steps(parts, tmp_path)
    assert bar_lines(log_stderr.getvalue()) == []
