import pytest

from fsdino.io.atomic import atomic_path, write_json_atomic


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
