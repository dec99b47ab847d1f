"""The evaluation engine's K-shot modes: the model's own fusion (one forward) and HSNet's vote (one forward
per support, votes over the largest vote ≥ 0.5), at the input and the original resolution."""

from __future__ import annotations

import pytest
import torch

from fsdino.evaluation.engine import evaluate, predict
from fsdino.evaluation.voting import vote_fraction
from fsdino.models.fsdino import FSDINOOutput
from fsdino.training.runtime import Runtime

CPU = Runtime(torch.device("cpu"))
SIZE = 8


class SupportEcho(torch.nn.Module):
    """Predicts the mean of its support masks (logit +1 where it exceeds 0.5, −1 elsewhere); counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.shots_per_call: list[int] = []

    def forward(self, query: torch.Tensor, supports: torch.Tensor, masks: torch.Tensor) -> FSDINOOutput:
        self.shots_per_call.append(supports.shape[1])
        return FSDINOOutput(mask_logits=(masks.mean(dim=1, keepdim=True) > 0.5).float() * 2 - 1, prior_logits=None)


def _columns(*spans: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
    for start, stop in spans:
        mask[:, start:stop] = 1
    return mask


def _batch(support_masks: list[torch.Tensor], original: tuple[int, int] = (SIZE, SIZE)) -> dict:
    shots = len(support_masks)
    return {
        "query_image": torch.zeros(1, 3, SIZE, SIZE),
        "support_images": torch.zeros(1, shots, 3, SIZE, SIZE),
        "support_masks": torch.stack(support_masks)[None],
        "query_mask": torch.zeros(1, SIZE, SIZE, dtype=torch.long),
        "query_mask_original": [torch.zeros(original, dtype=torch.long)],
        "class_id": torch.tensor([1]),
        "index": torch.tensor([0]),
    }


def _columns_of(prediction: torch.Tensor) -> list[int]:
    return [column for column in range(prediction.shape[1]) if prediction[:, column].all()]


def test_hsnet_vote_divides_by_the_largest_vote_not_by_k() -> None:
    # votes per column: 0-1 one, 2-3 two, 4-5 one, 6-7 none; the largest vote is 2 of K = 3
    supports = [_columns((0, 4)), _columns((2, 6)), torch.zeros(SIZE, SIZE, dtype=torch.long)]
    model = SupportEcho()
    (voted,) = predict(model, [_batch(supports)], CPU, resolution="input", shot_fusion="vote")
    assert model.shots_per_call == [1, 1, 1]  # one forward per support, that support alone
    assert _columns_of(voted.prediction) == [0, 1, 2, 3, 4, 5]  # 1/2 ≥ 0.5: one vote is enough here
    assert voted.logits[0].tolist() == [0.0] * 2 + [0.5] * 2 + [0.0] * 2 + [-0.5] * 2  # fraction − 0.5
    fused = SupportEcho()
    (pooled,) = predict(fused, [_batch(supports)], CPU, resolution="input")
    assert fused.shots_per_call == [3] and _columns_of(pooled.prediction) == [2, 3]  # the model's fusion: 2/3 > 0.5
    unanimous = [_columns((0, 4)), _columns((2, 6)), _columns((2, 4))]  # largest vote 3: one of three is < 0.5
    (strict,) = predict(SupportEcho(), [_batch(unanimous)], CPU, resolution="input", shot_fusion="vote")
    assert _columns_of(strict.prediction) == [2, 3]


def test_votes_are_cast_at_the_scored_resolution_and_one_shot_is_unchanged() -> None:
    supports = [_columns((0, 4)), _columns((4, 8))]
    (voted,) = predict(SupportEcho(), [_batch(supports, original=(4, 16))], CPU, shot_fusion="vote")
    assert voted.prediction.shape == (4, 16) and voted.prediction.all()  # each pixel has the largest vote, 1
    (one,) = predict(SupportEcho(), [_batch(supports[:1])], CPU, resolution="input", shot_fusion="vote")
    (same,) = predict(SupportEcho(), [_batch(supports[:1])], CPU, resolution="input")
    assert torch.equal(one.prediction, same.prediction) and torch.equal(one.logits, same.logits)
    meter, _ = evaluate(SupportEcho(), [_batch(supports)], [1], CPU, resolution="input", shot_fusion="vote")
    assert meter.summary()["episodes"] == 1
    with pytest.raises(ValueError, match="shot_fusion: expected 'model' or 'vote'"):
        list(predict(SupportEcho(), [_batch(supports)], CPU, shot_fusion="average"))  # type: ignore[arg-type]


def test_vote_fraction_of_no_votes_is_zero() -> None:
    empty = torch.zeros(3, 3, dtype=torch.bool)
    assert torch.equal(vote_fraction([empty, empty]), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="at least one mask"):
        vote_fraction([])
