import numpy as np
import pytest
from PIL import Image

from fsdino.errors import InputError
from fsdino.io.images import read_image, read_mask, read_support_mask, write_mask


def save(path, array, mode=None, palette=False):
    image = Image.fromarray(array, mode=mode)
    if palette:
        image = image.convert("P")
        image.putpalette([0, 0, 0, 128, 0, 0] + [255, 255, 255] * 254)
        image.putdata(array.flatten().tolist())
    image.save(path)
    return path


def test_voc_style_mask_keeps_ignore(tmp_path):
    mask = np.array([[0, 1], [255, 1]], dtype=np.uint8)
    assert np.array_equal(read_mask(save(tmp_path / "m.png", mask)), mask)


def test_0_255_mask_means_255_is_foreground(tmp_path):
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    assert np.array_equal(read_mask(save(tmp_path / "m.png", mask)), np.array([[0, 1], [1, 0]]))


def test_palette_mask_is_read_by_index_not_colour(tmp_path):
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    path = save(tmp_path / "p.png", mask, palette=True)
    assert Image.open(path).mode == "P"
    assert np.array_equal(read_mask(path), mask)


def test_bilevel_mask(tmp_path):
    path = tmp_path / "b.png"
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1").save(path)
    assert np.array_equal(read_mask(path), np.array([[0, 1]]))


def test_other_values_are_refused_with_the_file_name(tmp_path):
    path = save(tmp_path / "bad.png", np.array([[0, 7], [128, 1]], dtype=np.uint8))
    with pytest.raises(InputError, match=r"bad\.png: mask values must be \{0,1,255\} or \{0,255\}, found 7, 128"):
        read_mask(path)


def test_colour_mask_is_refused(tmp_path):
    path = save(tmp_path / "rgb.png", np.array([[[0, 0, 0], [255, 0, 0]]], dtype=np.uint8))
    with pytest.raises(InputError, match=r"rgb\.png: expected a single-channel mask"):
        read_mask(path)


def test_mask_size_must_match_its_image(tmp_path):
    path = save(tmp_path / "m.png", np.zeros((4, 6), dtype=np.uint8))
    with pytest.raises(InputError, match=r"m\.png: mask is 6×4 but its image is 5×4"):
        read_mask(path, expected_size=(4, 5))


def test_empty_support_mask_is_refused(tmp_path):
    path = save(tmp_path / "empty.png", np.array([[0, 255]], dtype=np.uint8) * 0)
    with pytest.raises(InputError, match=r"empty\.png: support mask is empty"):
        read_support_mask(path, (1, 2))


def test_unreadable_and_missing_images(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"junk\.jpg: unreadable image"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(InputError, match=r"gone\.jpg: image not found"):
        read_image(tmp_path / "gone.jpg")


def test_written_masks_are_0_255_and_round_trip(tmp_path):
    mask = np.array([[True, False], [False, True]])
    write_mask(tmp_path / "out.png", mask)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "out.png")))) == {0, 255}
    assert np.array_equal(read_mask(tmp_path / "out.png"), mask.astype(np.uint8))
    assert list(tmp_path.glob(".*.tmp")) == []
