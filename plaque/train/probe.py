"""The Stage-1 probe: how much of each class a linear read-out of the prior finds, Stage-2's way.

Stage-2 reads the frozen prior's quantized latent ``z_q`` (B, d, h, w) through a 1×1 adapter, a linear map,
after resizing it bilinearly to its own grid. The probe asks the same of the prior: a 1×1 convolution
(d → C classes) is fitted on the ``z_q`` of a fixed subset of training slices, its logits resized
bilinearly to the slice grid, with Stage-2's loss (CE + soft Dice, `plaque.losses.segmentation.SegLoss`);
then its hard Dice per class is measured on the validation slices at pixel level. The fit is fresh at
every validation and seeded (`PROBE_SEED`), so the score depends on the prior alone. Fit and scoring run
in float32 whatever autocast the caller runs under: under bf16 autocast (the trainer validates in the
training precision) the 300 small Adam steps of the fit were lost to bf16's 8-bit mantissa and the
probe found nothing (validation macro Dice 0.02, where a float32 fit read 0.36-0.49 from priors trained
the same way).

A probe that reads only what a linear map of the prior can give is a lower bound on what Stage-2 can
get from the prior; what it finds for the hard classes (wall, calcified, non-calcified) is the class
structure the contrastive loss is meant to put there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from plaque.classes import FOREGROUND, NUM_CLASSES
from plaque.losses.segmentation import DiceMeter, SegLoss, macro_dice
from plaque.models.resize import resize_bilinear

PROBE_SLICES = 2048  # training slices the probe is fitted on
PROBE_STEPS = 300  # Adam steps of the fit
PROBE_BATCH = 64
PROBE_LR = 1e-2
PROBE_SEED = 0
ENCODE_BATCH = 256


@torch.no_grad()
def encode(latent: Callable[[Tensor], Tensor], images: np.ndarray, device: torch.device) -> Tensor:
    """Latents (N, d, h, w) of slices ``images`` (N, s, s) in [0, 1], in batches, on ``device``."""
    out = [
        latent(torch.from_numpy(np.asarray(images[i : i + ENCODE_BATCH], dtype=np.float32))[:, None].to(device))
        for i in range(0, len(images), ENCODE_BATCH)
    ]
    return torch.cat(out)


def fit_probe(features: Tensor, labels: Tensor, *, steps: int = PROBE_STEPS, seed: int = PROBE_SEED) -> nn.Conv2d:
    """A 1×1 convolution (d → C) fitted on ``features`` (N, d, h, w) against ``labels`` (N, s, s) int64, logits
    resized bilinearly to (s, s), with CE + soft Dice (weights 1, 1), Adam; seeded, on ``features``' device."""
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    probe = nn.Conv2d(features.shape[1], NUM_CLASSES, 1).to(features.device)
    torch.random.set_rng_state(torch_state)  # the caller's random stream is left as it was
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR)
    loss = SegLoss(ce_weight=1.0, dice_weight=1.0)
    size = labels.shape[-2:]
    features = features.float()
    with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
        for _ in range(steps):
            pick = torch.randint(len(features), (min(PROBE_BATCH, len(features)),), generator=generator)
            pick = pick.to(features.device)
            total, _ = loss(resize_bilinear(probe(features[pick]), size), labels[pick])
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
    return probe.eval()


@torch.no_grad()
def probe_scores(probe: nn.Conv2d, features: Tensor, labels: Tensor) -> tuple[dict[int, float], float]:
    """Hard Dice per foreground class (NaN-free: classes absent from both are left out) and their macro mean of the
    probe's predictions on ``features`` (N, d, h, w) against ``labels`` (N, s, s)."""
    meter = DiceMeter()
    with torch.autocast(features.device.type, enabled=False):
        for i in range(0, len(features), ENCODE_BATCH):
            logits = resize_bilinear(probe(features[i : i + ENCODE_BATCH].float()), labels.shape[-2:])
            meter.update(logits.argmax(dim=1), labels[i : i + ENCODE_BATCH])
    scores = meter.scores()
    per_class = {c: float(scores[c]) for c in FOREGROUND if not math.isnan(float(scores[c]))}
    return per_class, macro_dice(scores)
