import numpy as np
import pytest

from fsdino.evaluation.davis import (
    DavisMeter,
    boundary_f_measure,
    boundary_map,
    disk,
    frame_scores,
    jf_mean,
    merge_objects,
    object_scores,
    region_similarity,
)


def square(shape, top, left, size):
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_j_is_iou_and_one_when_both_empty():
    a, b = square((10, 10), 0, 0, 4), square((10, 10), 2, 2, 4)
    assert region_similarity(a, b) == pytest.approx(4 / 28)
    assert region_similarity(np.zeros((5, 5)), np.zeros((5, 5))) == 1.0


def test_boundary_map_marks_the_transition_pixels():
    mask = square((6, 6), 2, 2, 2)
    boundary = boundary_map(mask)
    assert boundary[3, 3]  # object pixel with background on its right and below
    assert boundary[1, 2] and boundary[1, 1]  # background pixels whose lower / lower-right neighbour is object
    assert not boundary[2, 2]  # object pixel whose right, lower and lower-right neighbours are object
    assert not boundary[0, 5] and not boundary[5, 0]


def test_disk_radius_eight_at_davis_resolution():
    assert disk(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert int(np.ceil(0.008 * np.hypot(480, 854))) == 8


def test_f_is_one_for_identical_masks_and_tolerates_small_shifts():
    truth = square((480, 854), 100, 100, 200)
    assert boundary_f_measure(truth, truth) == 1.0
    shifted = square((480, 854), 105, 103, 200)  # within the 8 px tolerance
    assert boundary_f_measure(shifted, truth) == 1.0
    far = square((480, 854), 130, 100, 200)  # 30 px away: horizontal edges no longer match
    assert boundary_f_measure(far, truth) < 0.7


def test_f_empty_cases():
    empty, some = np.zeros((20, 20), bool), square((20, 20), 5, 5, 5)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, some) == 0.0
    assert boundary_f_measure(some, empty) == 0.0


def test_first_and_last_frames_are_excluded_and_objects_are_averaged():
    truth = [square((20, 20), 5, 5, 5)] * 4
    wrong = np.zeros((20, 20), bool)
    # frames 0 and 3 are wrong but excluded
    j, f = object_scores([wrong, truth[1], truth[2], wrong], truth)
    assert (j, f) == (1.0, 1.0)
    j2, f2 = object_scores([truth[0], wrong, truth[2], truth[3]], truth)
    assert j2 == pytest.approx(0.5) and f2 == pytest.approx(0.5)
    assert jf_mean({"a/1": (j, f), "a/2": (j2, f2)}) == pytest.approx({"J": 0.75, "F": 0.75, "J&F": 0.75})


def test_frame_scores_drop_void_pixels_from_both_masks():
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[2:6, 2:6] = 1
    truth[6:8, 2:6] = 255  # a void band under the object
    prediction = square((10, 10), 2, 2, 6)  # rows and columns 2-7: the object, the void band and more
    j, f = frame_scores(prediction, truth)
    # void dropped: prediction 36 - 8 = 28 px, truth 16 px inside it → J = 16 / 28 (with void: 16 / 36)
    assert j == pytest.approx(16 / 28)
    assert 0 < f <= 1
    assert frame_scores(truth == 1, truth) == (1.0, 1.0)
    empty = np.zeros((10, 10), dtype=np.uint8)
    assert frame_scores(np.zeros((10, 10), dtype=bool), empty) == (1.0, 1.0)


def test_davis_meter_averages_frames_per_object_then_objects():
    meter = DavisMeter()
    truth = np.zeros((8, 8), dtype=np.uint8)
    truth[:4, :4] = 1
    half = np.zeros((8, 8), dtype=bool)
    half[:4, :2] = True
    meter.update("seq/1", truth == 1, truth)  # J 1
    meter.update("seq/1", half, truth)  # J 0.5
    meter.update("seq/2", np.zeros((8, 8), dtype=bool), truth)  # J 0, F 0
    scores = meter.object_scores()
    assert scores["seq/1"][0] == pytest.approx(0.75) and scores["seq/2"] == (0.0, 0.0)
    summary = meter.summary()
    assert summary["J"] == pytest.approx(0.375)
    assert summary["J&F"] == pytest.approx((summary["J"] + summary["F"]) / 2)
    assert summary["objects"] == 2 and summary["frames"] == 3


def test_merge_gives_each_pixel_to_the_highest_positive_logit() -> None:
    first = np.full((2, 4), -1.0)
    first[:, :3] = [[2.0, 3.0, 0.5], [2.0, 3.0, 0.5]]  # object 1 claims columns 0-2
    second = np.full((2, 4), -1.0)
    second[:, 1:] = [[1.0, 4.0, 0.5], [1.0, 4.0, 0.5]]  # object 2 claims columns 1-3
    first[0, 3] = 0.5  # equal to object 2's logit there
    second[1, 3] = 0.0  # a logit of 0 is not foreground (the threshold of every mask is > 0)
    labels = merge_objects({2: second, 1: first})
    # column 0: only 1; column 1: 1 higher; column 2: 2 higher; column 3: a tie (to 1), then no positive logit
    assert labels.tolist() == [[1, 1, 2, 1], [1, 1, 2, 0]]
    assert merge_objects({1: np.full((2, 2), -3.0), 4: np.full((2, 2), -0.1)}).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="no objects"):
        merge_objects({})


def test_overlapping_objects_are_scored_on_the_merged_label_map() -> None:
    truth_1, truth_2 = square((20, 20), 2, 2, 8), square((20, 20), 10, 10, 8)
    confident = np.where(square((20, 20), 2, 2, 16), 5.0, -5.0)  # object 1 spills over object 2, confidently
    modest = np.where(truth_2, 1.0, -5.0)  # object 2 exactly, but with a lower logit
    truths = {1: truth_1.astype(np.uint8), 2: truth_2.astype(np.uint8)}
    merged = DavisMeter()
    scores = merged.update_frame("seq", {1: confident, 2: modest}, truths)
    # object 2 loses every pixel to object 1: J = 0; object 1 is scored on its 16×16 square
    assert scores[2][0] == 0.0 and scores[1][0] == pytest.approx(64 / 256)
    separate = DavisMeter()  # each mask scored on its own (before 2026-12): object 2 would get J = 1
    assert separate.update("seq/2", modest > 0, truths[2])[0] == 1.0
    assert set(merged.frames) == {"seq/1", "seq/2"}
