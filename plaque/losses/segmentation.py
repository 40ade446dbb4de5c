"""Stage-2 loss (cross-entropy + soft Dice) and hard Dice scores for validation.

Loss (appendix 1.4): ``L_seg = λce · CE + λdice · L_dice``.

- CE: multi-class cross-entropy of the logits, mean over pixels.
- L_dice: soft multi-class Dice on softmax probabilities against one-hot
  targets, computed per class over the whole batch (intersections and sums
  pooled over all images and pixels of the batch, as nnU-Net's "batch Dice"),
  ``D_c = (2 Σ p_c·y_c + smooth) / (Σ p_c + Σ y_c + smooth)`` with smooth = 1,
  and ``L_dice = 1 − mean D_c`` over the foreground classes 1..4 present in the
  batch's target. Background is left to CE (it dominates every slice); a class
  absent from the batch is left out, because its Dice would only reward
  driving its probability to exactly 0 everywhere, which CE already handles.
  With no foreground class in the batch, L_dice is 0.
  Both terms are computed in float32 even under autocast.

Validation (hard Dice): ``DiceMeter`` sums per-class intersections and
pixel counts of predicted and true label maps over batches, so a validation
pass over a whole split gives the exact Dice of the split. Empty rule: a class
absent from both prediction and target has Dice NaN (excluded from means); a
class absent from the target but predicted scores 0. ``macro_dice`` is the
NaN-ignoring mean over classes 1..4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plaque.classes import FOREGROUND, NUM_CLASSES


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0, classes: Sequence[int] = FOREGROUND) -> Tensor:
    """Batch soft Dice loss ``1 − mean D_c`` over ``classes`` present in ``target``.

    Args:
        logits: (B, C, H, W).
        target: (B, H, W) int64 class ids.
        smooth: added to numerator and denominator.
        classes: the classes that may count.

    Returns:
        Scalar; a graph-keeping zero when none of ``classes`` is present.
    """
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + smooth) / (denom + smooth)
    wanted = torch.zeros(probs.shape[1], dtype=torch.bool, device=probs.device)
    wanted[list(classes)] = True
    present = wanted & (onehot.sum(dim=(0, 2, 3)) > 0)
    if not bool(present.any()):
        return probs.sum() * 0
    return 1 - dice[present].mean()


class SegLoss(nn.Module):
    """``λce · CE + λdice · soft Dice``; see the module docstring for the Dice variant."""

    def __init__(self, *, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight, self.smooth = ce_weight, dice_weight, smooth

    def forward(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Logits (B, C, H, W), target (B, H, W) int64 → (total scalar, {"ce", "dice"} unweighted floats)."""
        ce = F.cross_entropy(logits.float(), target)
        dice = soft_dice_loss(logits, target, self.smooth)
        total = self.ce_weight * ce + self.dice_weight * dice
        values = torch.stack([ce.detach(), dice.detach()]).tolist()
        return total, {"ce": values[0], "dice": values[1]}


class DiceMeter:
    """Per-class hard Dice accumulated over batches from summed intersections and pixel counts.

    ``counts`` (3, C) int64 on the CPU holds (intersection, predicted, true) pixel counts.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(3, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add label maps ``pred`` and ``target`` (N, H, W) int (any equal shapes)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        p, t = pred.reshape(-1).long(), target.reshape(-1).long()
        c = self.num_classes
        both = torch.cat([p, t])
        if both.numel() and (int(both.min()) < 0 or int(both.max()) >= c):
            raise ValueError(f"label values must lie in 0..{c - 1}")
        batch = torch.stack(
            [torch.bincount(p[p == t], minlength=c), torch.bincount(p, minlength=c), torch.bincount(t, minlength=c)]
        )
        self.counts += batch.cpu()

    def scores(self) -> Tensor:
        """Dice per class (C,) float64; NaN where a class is absent from both predictions and targets."""
        inter, pred, true = self.counts.double()
        total = pred + true
        return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.full_like(total, math.nan))


def dice_scores(pred: Tensor, target: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Per-class hard Dice (C,) float64 of label maps ``pred`` and ``target`` (N, H, W), with the empty rule."""
    meter = DiceMeter(num_classes)
    meter.update(pred, target)
    return meter.scores()


def macro_dice(scores: Tensor, classes: Sequence[int] = FOREGROUND) -> float:
    """Mean of ``scores`` (C,) over ``classes`` ignoring NaN; NaN when all of them are NaN."""
    picked = scores[list(classes)]
    picked = picked[~picked.isnan()]
    return float(picked.mean()) if picked.numel() else math.nan
