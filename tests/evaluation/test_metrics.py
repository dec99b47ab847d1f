import pytest
import torch

from fsdino.evaluation.metrics import SegmentationMeter, intersection_and_union


def t(rows):
    return torch.tensor([rows])


def test_counts_by_hand_with_ignore_pixels_dropped_from_both_sides():
    prediction = t([[1, 1, 0, 0, 1]])
    target = t([[1, 0, 1, 0, 255]])  # the last pixel is ignored although predicted foreground
    assert intersection_and_union(prediction, target).tolist() == [[1.0, 3.0, 1.0, 3.0]]


def test_empty_prediction():
    counts = intersection_and_union(t([[0, 0, 0]]), t([[1, 1, 0]]))
    assert counts.tolist() == [[0.0, 2.0, 1.0, 3.0]]


def test_miou_sums_per_class_before_dividing():
    meter = SegmentationMeter(class_ids=(1, 2))
    # class 1: episode A I=1 U=2, episode B I=3 U=4 → (1+3)/(2+4) = 2/3 (not the mean of 1/2 and 3/4)
    meter.update(t([[1, 1, 0, 0]]), t([[1, 0, 0, 0]]), [1])
    meter.update(t([[1, 1, 1, 1]]), t([[1, 1, 1, 0]]), [1])
    # class 2: I=0 U=1
    meter.update(t([[0, 0, 0, 0]]), t([[0, 1, 0, 0]]), [2])
    assert meter.class_iou() == pytest.approx({1: 2 / 3, 2: 0.0})
    assert meter.miou() == pytest.approx((2 / 3 + 0) / 2)
    assert meter.num_episodes == 3


def test_fb_iou_pools_each_side_over_all_episodes():
    meter = SegmentationMeter(class_ids=(1, 2))
    meter.update(t([[1, 1, 0, 0]]), t([[1, 0, 0, 0]]), [1])  # fg I1 U2, bg I2 U3
    meter.update(t([[0, 0, 0, 0]]), t([[0, 1, 0, 0]]), [2])  # fg I0 U1, bg I3 U4
    assert meter.fb_iou() == pytest.approx(((1 + 0) / (2 + 1) + (2 + 3) / (3 + 4)) / 2)


def test_a_class_absent_from_every_episode_counts_zero_and_is_reported():
    meter = SegmentationMeter(class_ids=(1, 2, 3))
    meter.update(t([[1, 0]]), t([[1, 0]]), [1])
    assert meter.missing_classes == [2, 3]
    assert meter.miou() == pytest.approx(1 / 3)


def test_batched_updates_equal_single_updates():
    torch.manual_seed(0)
    predictions = torch.rand(4, 8, 8) > 0.5
    targets = torch.randint(0, 2, (4, 8, 8))
    targets[:, 0] = 255
    classes = [1, 2, 1, 2]
    batched, single = SegmentationMeter((1, 2)), SegmentationMeter((1, 2))
    batched.update(predictions, targets, classes)
    for i in range(4):
        single.update(predictions[i : i + 1], targets[i : i + 1], classes[i : i + 1])
    assert batched.summary() == pytest.approx(single.summary())


def test_unknown_class_and_shape_mismatch_are_errors():
    meter = SegmentationMeter((1,))
    with pytest.raises(ValueError, match="class 5 is not one of"):
        meter.update(t([[1]]), t([[1]]), [5])
    with pytest.raises(ValueError, match="differ"):
        meter.update(t([[1, 0]]), t([[1]]), [1])
