"""The optimiser schedule of a training run: peak learning rate, linear warmup, then constant or cosine decay.

``train.lr`` is the peak: ``paper`` keeps the stage's own learning rate (``stage2.optim.lr``, the appendix's
AdamW 1e-4), a number replaces it for a short run (the ``demo`` profile, chosen by a validation sweep).
``train.warmup`` is the share of the run's optimizer steps over which the rate rises linearly from
``peak / warmup_steps`` to the peak; ``train.decay`` is ``constant`` (the appendix: no schedule) or
``cosine`` (from the peak at the end of warmup to 0 after the last step of ``max_epochs``). With warmup 0
and ``constant`` the schedule is the identity: the paper's constant rate.

The rate is set per optimizer step (`lr_factor`), so a run of a few hundred steps gets a smooth schedule.
"""

from __future__ import annotations

import math
from typing import Any

DECAYS = ("constant", "cosine")
PAPER = "paper"


def peak_lr(train: dict[str, Any], stage_lr: float) -> float:
    """The peak learning rate: ``stage_lr`` for ``train.lr: paper``, else ``train.lr``."""
    return float(stage_lr if train["lr"] == PAPER else train["lr"])


def lr_factor(step: int, total_steps: int, warmup: float, decay: str) -> float:
    """Multiplier of the peak rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Args:
        step: steps taken so far (the rate of the next step).
        total_steps: steps of the whole run (``max_epochs`` × optimizer steps per epoch).
        warmup: share of ``total_steps`` warming up (0 = none).
        decay: ``constant`` or ``cosine``.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    warm = round(warmup * total_steps)
    if step < warm:
        return (step + 1) / warm
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def describe(train: dict[str, Any], optim: dict[str, Any]) -> str:
    """One line for tables and model cards, e.g. ``AdamW peak 0.001, warmup 5 % of steps, cosine decay``.

    Args:
        train: the resolved ``train`` section (``lr``, ``warmup``, ``decay``).
        optim: the resolved ``stage2.optim`` section (``lr``, ``weight_decay``).
    """
    text = f"AdamW {'peak ' if train['decay'] != 'constant' or train['warmup'] else ''}{peak_lr(train, optim['lr']):g}"
    text += f", weight decay {optim['weight_decay']:g}"
    if train["warmup"]:
        text += f", warmup {train['warmup']:.0%} of steps"
    return text + (", cosine decay" if train["decay"] == "cosine" else ", constant")


def describe_paper(optim: dict[str, Any]) -> str:
    """`describe` of the appendix's schedule: ``stage2.optim``'s rate, constant, no warmup."""
    return describe({"lr": PAPER, "warmup": 0.0, "decay": "constant"}, optim)
