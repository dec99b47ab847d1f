import errno
import os
import stat
from pathlib import Path

import pytest

from fsdino.errors import OutputError
from fsdino.io.atomic import (
    atomic_folder,
    atomic_path,
    atomic_paths,
    check_writable_dir,
    write_bytes_atomic,
    write_files_atomic,
    write_json_atomic,
)
from tests.filesystems import PAGE, files_under, fill, tmpfs


def test_written_file_appears_whole_and_no_temporary_is_left(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    write_json_atomic(target, {"miou": 0.5})
    assert target.read_text() == '{\n  "miou": 0.5\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        assert temporary.suffix == ".pt" and temporary.parent == tmp_path
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.fixture
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_files_and_folders_get_the_umask_mode_not_0600(tmp_path, usual_umask):
    write_json_atomic(tmp_path / "metrics.json", {"miou": 0.5})
    with atomic_path(tmp_path / "mask.png") as temporary:
        temporary.write_bytes(b"png")
    with atomic_folder(tmp_path / "VOC2012") as staging:
        (staging / "a.txt").write_text("a")
    assert mode(tmp_path / "metrics.json") == mode(tmp_path / "mask.png") == 0o644
    assert mode(tmp_path / "VOC2012") == 0o755
    os.umask(0o077)  # a stricter umask is honoured too
    write_json_atomic(tmp_path / "private.json", {})
    assert mode(tmp_path / "private.json") == 0o600


def test_files_written_together_appear_together_or_not_at_all(tmp_path):
    first, second = tmp_path / "q_mask.png", tmp_path / "q_overlay.png"
    with pytest.raises(RuntimeError), atomic_paths(first, second) as (mask, _):
        mask.write_bytes(b"mask")
        raise RuntimeError("overlay failed")
    assert list(tmp_path.iterdir()) == []
    write_files_atomic({first: b"mask", second: b"overlay"})
    assert first.read_bytes() == b"mask" and second.read_bytes() == b"overlay"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q_mask.png", "q_overlay.png"]


@pytest.mark.parametrize("wrapped", [False, True], ids=["OSError", "RuntimeError from OSError (torch.save)"])
def test_a_full_disk_is_an_output_error_naming_the_file(tmp_path, wrapped):
    target = tmp_path / "model.pt"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    matching = pytest.raises(OutputError, match=r"model\.pt: cannot write: No space left on device")
    with matching as caught, atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        if not wrapped:
            raise full
        try:
            raise full
        except OSError as error:  # as torch.save does: its RuntimeError's context is the OSError
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from error
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(OSError, match="bad descriptor"), atomic_path(tmp_path / "x.json"):
        raise OSError(errno.EBADF, "bad descriptor")


def test_a_real_full_disk(tmp_path):
    with tmpfs(tmp_path / "small") as small:
        fill(small, leave=PAGE)
        write_json_atomic(small / "fits.json", {"a": 1})  # one page
        with pytest.raises(OutputError, match=r"big\.bin: cannot write: No space left on device"):
            write_bytes_atomic(small / "big.bin", b"x" * 8 * PAGE)
        assert files_under(small) == ["fits.json"]


@pytest.mark.parametrize("case", ["folder under a file", "in /proc", "a file"])
def test_an_unwritable_output_folder_is_refused_first_and_nothing_is_left(tmp_path, case):
    (tmp_path / "file").write_text("x")
    path, message = {
        "folder under a file": (tmp_path / "file" / "out", "cannot be created: .*file is a file, not a folder"),
        "in /proc": (Path("/proc/fsdino-test/out"), r"is not a writable folder \("),
        "a file": (tmp_path / "file", "exists and is not a folder"),
    }[case]
    with pytest.raises(OutputError, match=f"^{path}: --out {message}"):
        check_writable_dir(path, what="--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_read_only_file_system_is_refused(tmp_path):
    refused = pytest.raises(OutputError, match=r"ro/out: out is not a writable folder \(Read-only file system\)")
    with tmpfs(tmp_path / "ro", read_only=True) as read_only, refused:
        check_writable_dir(read_only / "out", what="out")


def test_a_writable_folder_is_left_as_it_was(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # the folders it made to probe are removed again
    (tmp_path / "kept").mkdir()
    check_writable_dir(tmp_path / "kept")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)
