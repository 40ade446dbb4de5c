"""The learning-rate schedule: warmup, constant or cosine decay, and the paper's identity."""

import math

import pytest

from plaque.schedule import describe, describe_paper, lr_factor, peak_lr


def test_paper_schedule_is_constant_at_the_stage_rate():
    assert [lr_factor(s, 100, 0.0, "constant") for s in range(100)] == [1.0] * 100
    assert peak_lr({"lr": "paper"}, 1e-4) == 1e-4
    assert peak_lr({"lr": 2e-3}, 1e-4) == 2e-3


def test_warmup_rises_linearly_to_the_peak_then_cosine_reaches_zero():
    total, warmup = 200, 0.1
    factors = [lr_factor(s, total, warmup, "cosine") for s in range(total + 1)]
    assert factors[:20] == pytest.approx([(s + 1) / 20 for s in range(20)])
    assert factors[20] == 1.0
    assert all(b <= a for a, b in zip(factors[20:], factors[21:]))
    assert factors[110] == pytest.approx(0.5 * (1 + math.cos(math.pi * 90 / 180)))
    assert factors[-1] == pytest.approx(0.0)


def test_unknown_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        lr_factor(0, 10, 0.0, "linear")


def test_describe_prints_the_run_and_the_paper_schedule():
    optim = {"lr": 1e-4, "weight_decay": 1e-4}
    assert describe_paper(optim) == "AdamW 0.0001, weight decay 0.0001, constant"
    demo = describe({"lr": 1e-3, "warmup": 0.05, "decay": "cosine"}, optim)
    assert demo == "AdamW peak 0.001, weight decay 0.0001, warmup 5% of steps, cosine decay"
