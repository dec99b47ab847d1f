"""Pipeline steps whose output cannot be written: checked before any work, one line, exit 2, nothing left.

``stage_pascal``, ``stage_sa1b`` and ``stage_benchmark`` (``fsdino segment`` and ``score``: tests/test_cli.py,
tests/evaluation/test_scoring.py; the writers themselves: tests/io/test_atomic.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from components import stage_benchmark, stage_pascal, stage_sa1b
from components.profile import render
from tests.data.mini_datasets import make_voc
from tests.filesystems import PAGE, UNWRITABLE, files_under, fill, run_in_empty_folder, tmpfs, unwritable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_in_empty_folder(tmp_path, monkeypatch)


def demo_params(tmp_path: Path, benchmark_out: Path, num_images: int = 400) -> Path:
    """The rendered demo profile with the benchmark staged into ``benchmark_out`` and tracking off."""
    params = yaml.safe_load(render("demo", REPO / "profiles"))
    params["benchmark"]["synthetic"].update(out=str(benchmark_out), num_images=num_images)
    params["tracking"]["enabled"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def the_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def steps(tmp_path: Path, out: Path) -> dict[str, tuple]:
    """(main, argv, the option named in the message) of each step, writing to ``out``."""
    voc = make_voc(tmp_path / "pascal")
    return {
        "stage_pascal": (stage_pascal.main, ["--root", str(voc), "--out", str(out)], "out"),
        "stage_sa1b": (stage_sa1b.main, ["--source", "synthetic", "--output-dir", str(out), "--no-progress"],
                       "stage_sa1b.output_dir"),
        "stage_benchmark": (stage_benchmark.main, ["--params", str(demo_params(tmp_path, out))],
                            "benchmark.synthetic.out"),
    }  # fmt: skip


@pytest.mark.parametrize("case", UNWRITABLE)
@pytest.mark.parametrize("step", ["stage_pascal", "stage_sa1b", "stage_benchmark"])
def test_an_unwritable_output_is_one_line_and_exit_2(tmp_path, capsys, step, case):
    with unwritable(tmp_path, case) as out:
        main, argv, option = steps(tmp_path, out)[step]
        assert main(argv) == 2
        assert not out.exists()
    assert the_error_line(capsys).startswith(f"error: {out}: {option} ")


def test_stage_pascal_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path, capsys):
    voc = make_voc(tmp_path / "pascal")
    with tmpfs(tmp_path / "small") as small:
        fill(small)
        assert stage_pascal.main(["--root", str(voc), "--out", str(small / "staged")]) == 2
        assert files_under(small) == []
    assert the_error_line(capsys).endswith(": cannot write: No space left on device (nothing was written; free "
                                           "some space or choose another output folder)")  # fmt: skip


def test_stage_benchmark_on_a_full_disk_is_one_line_and_leaves_no_partial_dataset(tmp_path, capsys):
    with tmpfs(tmp_path / "small") as small:
        fill(small, leave=32 * PAGE)  # the synthetic images need more than that
        params = demo_params(tmp_path, small / "benchmark", num_images=40)
        assert stage_benchmark.main(["--params", str(params)]) == 2
        assert files_under(small) == []  # the dataset is built in a temporary folder, removed on error
    assert the_error_line(capsys) == (
        f"error: {small}/benchmark/VOC2012: cannot write: No space left on device (nothing was written; free some "
        "space or choose another output folder)"
    )


def test_staged_files_are_readable_by_others_under_the_usual_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        assert stage_pascal.main(["--root", str(make_voc(tmp_path / "pascal")), "--out", str(tmp_path / "s")]) == 0
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(tmp_path / "s")): stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "s").rglob("*")}
    assert modes.pop("splits") == 0o755
    assert modes and set(modes.values()) == {0o644}, modes
