"""Stage-2 loss (CE + soft Dice) and hard Dice scores: known values, the empty rule, exact streaming."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plaque.losses.segmentation import DiceMeter, SegLoss, dice_scores, macro_dice, soft_dice_loss


def labels() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 5, (2, 8, 8))


def test_perfect_prediction_has_zero_loss() -> None:
    y = labels()
    logits = 100.0 * F.one_hot(y, 5).permute(0, 3, 1, 2).float()
    total, parts = SegLoss()(logits, y)
    assert parts["ce"] == pytest.approx(0.0, abs=1e-6) and parts["dice"] == pytest.approx(0.0, abs=1e-6)
    assert float(total) == pytest.approx(0.0, abs=1e-6)


def test_uniform_logits() -> None:
    y = labels()
    logits = torch.zeros(2, 5, 8, 8, requires_grad=True)
    total, parts = SegLoss(ce_weight=0.5, dice_weight=2.0)(logits, y)
    assert parts["ce"] == pytest.approx(math.log(5), rel=1e-6)
    n = y.numel()
    expected = [(2 * 0.2 * int((y == c).sum()) + 1) / (0.2 * n + int((y == c).sum()) + 1) for c in (1, 2, 3, 4)]
    assert parts["dice"] == pytest.approx(1 - sum(expected) / 4, rel=1e-6)
    assert total.item() == pytest.approx(0.5 * parts["ce"] + 2.0 * parts["dice"], rel=1e-6)
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_counts_only_foreground_classes_present_in_the_batch() -> None:
    y = torch.zeros(1, 4, 4, dtype=torch.int64)
    y[0, :2, :2] = 1
    logits = 100.0 * F.one_hot(y, 5).permute(0, 3, 1, 2).float()
    logits[:, 3] = 200.0 * (y == 0)  # background pixels predicted as absent class 3: Dice ignores it
    assert float(soft_dice_loss(logits, y)) == pytest.approx(0.0, abs=1e-6)
    _, parts = SegLoss()(logits, y)
    assert parts["ce"] > 50


def test_dice_without_foreground_is_a_graph_keeping_zero() -> None:
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss = soft_dice_loss(logits, torch.zeros(2, 4, 4, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_low_precision_logits() -> None:
    y = labels()
    logits = torch.randn(2, 5, 8, 8).bfloat16().requires_grad_()
    total, parts = SegLoss()(logits, y)
    assert total.dtype == torch.float32 and math.isfinite(parts["ce"]) and math.isfinite(parts["dice"])
    total.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_dice_scores_empty_rule_and_known_values() -> None:
    target = torch.tensor([[[0, 1, 1, 2], [0, 0, 2, 2]]])
    pred = torch.tensor([[[0, 1, 3, 2], [0, 0, 2, 1]]])
    scores = dice_scores(pred, target)
    assert scores.dtype == torch.float64 and scores.shape == (5,)
    assert scores[0].item() == pytest.approx(1.0)  # 3 of 3
    assert scores[1].item() == pytest.approx(2 * 1 / (2 + 2))  # 1 overlap, 2 predicted, 2 true
    assert scores[2].item() == pytest.approx(2 * 2 / (2 + 3))
    assert scores[3].item() == 0.0  # predicted, absent from target
    assert math.isnan(scores[4].item())  # absent from both
    assert macro_dice(scores) == pytest.approx((0.5 + 0.8 + 0.0) / 3)  # classes 1..4, NaN ignored
    only_bg = dice_scores(torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2, dtype=torch.int64))
    assert math.isnan(macro_dice(only_bg)) and only_bg[0].item() == 1.0
    missed = dice_scores(torch.zeros(1, 2, 2, dtype=torch.int64), torch.full((1, 2, 2), 4))
    assert missed[4].item() == 0.0


def test_streamed_dice_equals_one_shot() -> None:
    torch.manual_seed(1)
    target = torch.randint(0, 5, (10, 16, 16))
    target[:5][target[:5] == 3] = 0  # class 3 only in the second half
    pred = torch.where(torch.rand(10, 16, 16) < 0.7, target, torch.randint(0, 5, (10, 16, 16)))
    meter = DiceMeter()
    per_batch = []
    for i in range(0, 10, 3):
        meter.update(pred[i : i + 3], target[i : i + 3])
        per_batch.append(dice_scores(pred[i : i + 3], target[i : i + 3]))
    one_shot = dice_scores(pred, target)
    torch.testing.assert_close(meter.scores(), one_shot, atol=0, rtol=0)
    assert not torch.allclose(torch.stack(per_batch).nanmean(0), one_shot)  # a mean of batch Dice differs
    assert meter.counts.sum(1).tolist() == [int((pred == target).sum()), pred.numel(), target.numel()]


def test_dice_meter_rejects_bad_input() -> None:
    meter = DiceMeter()
    with pytest.raises(ValueError, match="shape"):
        meter.update(torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="0..4"):
        meter.update(torch.full((1, 2, 2), 5), torch.zeros(1, 2, 2, dtype=torch.int64))
