"""Stage-1 losses: label alignment to the latent grid, hard-class sampling, SupCon, the combined loss.

The Stage-1 objective (appendix 1.3) is
``λ1·L1(recon, x) + λp·LPIPS(recon, x) + λc·commit + λcon·SupCon``.
The supervised contrastive term works on the projection-head embeddings at
latent resolution: labels are aligned to that grid by ``labels_to_latent``, and
``sample_hard_classes`` draws N embeddings per hard class present in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plaque.classes import BACKGROUND, CALCIFIED, LUMEN, NONCALCIFIED, NUM_CLASSES, WALL
from plaque.losses.perceptual import Perceptual
from plaque.models.vq import VQOutput

# Classes by increasing priority when a latent cell covers several (rarest wins).
LATENT_PRIORITY: tuple[int, ...] = (BACKGROUND, LUMEN, WALL, CALCIFIED, NONCALCIFIED)


def labels_to_latent(labels: Tensor, factor: int) -> Tensor:
    """Align a label map (B, H, W) int64 to the latent grid (B, H/factor, W/factor).

    Each latent cell takes the highest-priority class among the factor×factor
    pixels it covers: non-calcified > calcified > vessel wall > lumen >
    background. Nearest downsampling would drop the 1–3 px vessel wall and small
    plaques; this rule keeps every structure that touches a cell, at the cost of
    thickening thin classes at latent resolution.
    """
    b, h, w = labels.shape
    if h % factor or w % factor:
        raise ValueError(f"label size {(h, w)} is not divisible by {factor}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(f"label values must lie in 0..{NUM_CLASSES - 1}")
    rank = torch.empty(NUM_CLASSES, dtype=torch.int64, device=labels.device)
    rank[torch.tensor(LATENT_PRIORITY, device=labels.device)] = torch.arange(NUM_CLASSES, device=labels.device)
    cells = rank[labels].view(b, h // factor, factor, w // factor, factor).amax(dim=(2, 4))
    return torch.tensor(LATENT_PRIORITY, device=labels.device)[cells]


def sample_hard_cells(
    labels: Tensor, classes: Sequence[int], n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw exactly ``n`` cells of each class of ``classes`` present in ``labels`` (B, h, w) int64 (any shape).

    Without replacement when the class has at least ``n`` cells, with
    replacement otherwise (the same cell may repeat); absent classes contribute
    nothing. The draws use ``generator`` (a CPU generator; default: torch's
    global CPU RNG), so they are the same on CPU and CUDA.

    Returns:
        cells (M,) int64 indices into ``labels.reshape(-1)`` and their classes
        targets (M,) int64, with M = n × (number of present classes).
    """
    flat = labels.reshape(-1)
    cells, targets = [], []
    for c in classes:
        where = (flat == c).nonzero().squeeze(1)
        count = where.numel()
        if count == 0:
            continue
        if count >= n:
            choice = torch.randperm(count, generator=generator)[:n]
        else:
            choice = torch.randint(count, (n,), generator=generator)
        cells.append(where[choice.to(where.device)])
        targets.append(torch.full((n,), c, dtype=torch.int64, device=flat.device))
    if not cells:
        return flat.new_zeros(0), flat.new_zeros(0)
    return torch.cat(cells), torch.cat(targets)


def sample_hard_classes(
    embed: Tensor, labels: Tensor, classes: Sequence[int], n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Embedding vectors of the cells drawn by ``sample_hard_cells``.

    Args:
        embed: (B, E, h, w) embeddings.
        labels: (B, h, w) int64 classes at the same resolution.
        classes, n, generator: as for ``sample_hard_cells``.

    Returns:
        features (M, E) and targets (M,) int64, M = n × (number of present classes).
    """
    cells, targets = sample_hard_cells(labels, classes, n, generator)
    return embed.permute(0, 2, 3, 1).reshape(-1, embed.shape[1])[cells], targets


def supcon_loss(features: Tensor, targets: Tensor, temperature: float, counts: Tensor | None = None) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, L_out) of L2-normalised features (M, E), targets (M,).

    For anchor i with positives P(i) (other samples of its class) and all other
    samples A(i): ``ℓ_i = −1/|P(i)| Σ_{p∈P(i)} log softmax_{a∈A(i)}(f_i·f_a / τ)[p]``;
    the loss is the mean of ℓ_i over anchors with at least one positive. No
    base-temperature rescaling is applied. Its minimum is about log |P(i)|
    (all positives at similarity 1, negatives far), not 0.

    Duplicates (a cell drawn twice when sampling with replacement) are ordinary
    positives of each other. ``counts`` (M,) gives each row a multiplicity: the
    result equals the loss of the sample set in which row r appears
    ``counts[r]`` times, at the cost of the distinct rows only (sampling N per
    class with replacement repeats cells heavily). Default: all ones.

    Returns a zero that keeps the graph (``features.sum() * 0``) when there is
    nothing to contrast: no samples, a single class (no negatives), or no
    anchor with a positive. The log-denominator is a log-sum-exp (row maximum
    subtracted), so large ``1/τ`` never overflows.
    """
    zero = features.sum() * 0
    if features.shape[0] == 0 or targets.unique().numel() < 2:
        return zero
    m = features.shape[0]
    dtype = torch.promote_types(features.dtype, torch.float32)
    mult = torch.ones(m, dtype=dtype, device=features.device) if counts is None else counts.to(features.device, dtype)
    eye = torch.eye(m, dtype=dtype, device=features.device)
    others = mult[None, :] - eye  # how many samples of row v anchor u sees besides itself
    positives = others * (targets[:, None] == targets[None, :])
    n_pos = positives.sum(1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return zero
    with torch.autocast(features.device.type, enabled=False):  # similarities in float32 at least
        f = features.to(dtype)
        logits = f @ f.t() / temperature
    log_denom = torch.logsumexp(logits + torch.log(others), dim=1)  # log 0 = −inf drops empty entries
    per_anchor = (n_pos * log_denom - (positives * logits).sum(1)) / n_pos.clamp_min(1)
    return (mult * per_anchor)[anchors].sum() / mult[anchors].sum()


class Stage1Loss(nn.Module):
    """λ1·L1 + λp·LPIPS + λc·commit + λcon·SupCon with the weights of the ``stage1`` config section.

    The contrastive term samples ``contrastive.samples_per_class`` embeddings
    per class of ``contrastive.hard_classes`` present in the batch, on labels
    aligned by ``labels_to_latent``; repeated cells are passed once with their
    multiplicity (same value and gradient as the expanded sample set).
    """

    def __init__(self, cfg: dict[str, Any], perceptual: nn.Module | None = None) -> None:
        super().__init__()
        loss = cfg["loss"]
        self.weights = {
            "l1": loss["l1"],
            "perceptual": loss["perceptual"],
            "commit": loss["commit"],
            "contrastive": loss["contrastive"],
        }
        self.temperature = loss["temperature"]
        self.samples_per_class = cfg["contrastive"]["samples_per_class"]
        self.hard_classes = tuple(cfg["contrastive"]["hard_classes"])
        self.perceptual = perceptual if perceptual is not None else Perceptual(cfg["perceptual"]["net"])

    @property
    def backbone(self) -> str:
        """The LPIPS trunk in use: ``pretrained`` or ``random``."""
        return self.perceptual.backbone

    def forward(
        self, out: VQOutput, x: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss (scalar) and its unweighted components plus ``total`` as floats.

        Args:
            out: model output for ``x``.
            x: (B, 1, H, W) input slices in [0, 1].
            labels: (B, H, W) int64 classes at input resolution.
            generator: CPU generator for the contrastive sampling (default: global RNG).
        """
        factor = labels.shape[-1] // out.embed.shape[-1]
        labels_lat = labels_to_latent(labels, factor).reshape(-1)
        cells, _ = sample_hard_cells(labels_lat, self.hard_classes, self.samples_per_class, generator)
        cells, counts = cells.unique(return_counts=True)
        feats = out.embed.permute(0, 2, 3, 1).reshape(-1, out.embed.shape[1])[cells]
        parts = {
            "l1": F.l1_loss(out.recon, x),
            "perceptual": self.perceptual(out.recon, x),
            "commit": out.commit,
            "contrastive": supcon_loss(feats, labels_lat[cells], self.temperature, counts),
        }
        total = sum(self.weights[k] * v for k, v in parts.items())
        values = torch.stack([v.detach().float() for v in (*parts.values(), total)]).tolist()
        return total, dict(zip([*parts, "total"], values))
