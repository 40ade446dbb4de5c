"""Stage-1 VQ autoencoder: encoder, EMA vector quantizer, decoder and contrastive projection head.

Shapes: input slices ``x`` (B, 1, H, W) in [0, 1]; latents (B, d, h, w) with
``h = H / downsample``; code indices (B, h, w); contrastive embeddings
(B, embed_dim, h, w), unit length over channels.

Codebook. The K × d codebook is not a parameter: it is updated by exponential
moving averages (decay ``ema_decay``) of the encoder outputs assigned to each
code, with Laplace smoothing of the assignment counts (van den Oord et al.,
2017, appendix). That update replaces the codebook loss ``||sg(z_e) − e||²`` of
the original VQ-VAE, so the only quantizer loss is the commitment term
``||z_e − sg(e)||²``. Gradients pass the quantizer by the straight-through
estimator.

Code health. Codes are seeded from random encoder outputs of the first training
batch. Each training step counts, per code, how many steps it has gone unused;
with ``reseed_dead`` a code unused for ``dead_after`` steps is re-seeded from a
random encoder output of the current batch (drawn with the CPU torch RNG, so
runs are reproducible given the seed on CPU and CUDA alike). Laplace smoothing
slowly pulls a long-unused code toward the origin (its smoothed count falls
below ``eps`` after about ln(1/eps)/(1 − decay) steps, ~1150 at decay 0.99);
re-seeding after ``dead_after`` steps replaces such codes well before that.

Distributed training. When ``torch.distributed`` is initialised the per-step
assignment counts and sums are all-reduced before the EMA update and re-seeded
codes are taken from rank 0's batch (broadcast), so every rank holds the same
codebook. All state lives in buffers, so ``state_dict()`` is a full checkpoint.

Projection head. ``1×1 conv → GELU → 1×1 conv`` to ``embed_dim``, then L2
normalisation over channels. It reads the quantized latent ``z_q`` (after the
straight-through estimator): the contrastive loss then structures the
representation Stage-2 receives (the frozen encoder's ``z_q``), and its
gradient still reaches the encoder through the straight-through path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


@dataclass
class VQOutput:
    """Result of ``VQAutoencoder.forward``.

    recon: (B, 1, H, W) reconstruction in [0, 1].
    z_e: (B, d, h, w) encoder output.
    z_q: (B, d, h, w) quantized latent (straight-through: gradients flow to ``z_e``).
    indices: (B, h, w) int64 code indices.
    commit: scalar commitment loss ``mean((z_e − sg(z_q))²)``.
    embed: (B, embed_dim, h, w) projection-head output, unit length over channels.
    """

    recon: Tensor
    z_e: Tensor
    z_q: Tensor
    indices: Tensor
    commit: Tensor
    embed: Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, SiLU, 3×3 conv) × 2; 1×1 skip when the width changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, padding=1),
            _norm(cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


def _level(cin: int, cout: int, res_blocks: int) -> list[nn.Module]:
    """``res_blocks`` residual blocks from width ``cin`` to ``cout`` (a 1×1 conv when there are none)."""
    if res_blocks == 0:
        return [nn.Conv2d(cin, cout, 1)] if cin != cout else []
    return [ResBlock(cin if i == 0 else cout, cout) for i in range(res_blocks)]


def downsample_steps(downsample: int, levels: int) -> list[int]:
    """Stride-2 steps after each resolution level: log2(downsample) spread evenly, earlier levels first."""
    n = int(math.log2(downsample))
    if 2**n != downsample:
        raise ValueError(f"downsample must be a power of 2, got {downsample}")
    return [n // levels + (1 if i < n % levels else 0) for i in range(levels)]


class Encoder(nn.Module):
    """(B, 1, H, W) → (B, latent_dim, H/downsample, W/downsample).

    3×3 stem; per level ``i``: residual blocks at width ``channels[i]``, then
    its stride-2 3×3 convs; GroupNorm, SiLU, 1×1 conv to ``latent_dim``.
    """

    def __init__(self, channels: list[int], res_blocks: int, steps: list[int], latent_dim: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels[0], 3, padding=1)
        layers: list[nn.Module] = []
        cin = channels[0]
        for ch, k in zip(channels, steps):
            layers += _level(cin, ch, res_blocks)
            layers += [nn.Conv2d(ch, ch, 3, stride=2, padding=1) for _ in range(k)]
            cin = ch
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, latent_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))


class Decoder(nn.Module):
    """(B, latent_dim, h, w) → (B, 1, h·downsample, w·downsample) in [0, 1], mirroring ``Encoder``.

    3×3 conv from ``latent_dim`` to ``channels[-1]``; per level, last first:
    nearest ×2 upsampling + 3×3 conv for each of its steps, then residual
    blocks at width ``channels[i]``; GroupNorm, SiLU, 3×3 conv to 1 channel, sigmoid.
    """

    def __init__(self, channels: list[int], res_blocks: int, steps: list[int], latent_dim: int) -> None:
        super().__init__()
        cin = channels[-1]
        self.inp = nn.Conv2d(latent_dim, cin, 3, padding=1)
        layers: list[nn.Module] = []
        for ch, k in zip(reversed(channels), reversed(steps)):
            for _ in range(k):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, ch, 3, padding=1)]
                cin = ch
            layers += _level(cin, ch, res_blocks)
            cin = ch
        self.body = nn.Sequential(*layers)
        self.out = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, 1, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.out(self.body(self.inp(z))))


class EMAQuantizer(nn.Module):
    """Nearest-code vector quantizer with an EMA-updated codebook and dead-code re-seeding.

    Buffers: ``codebook`` (K, d); ``ema_count`` (K,) and ``ema_sum`` (K, d), the
    moving averages of assignment counts and summed assigned vectors;
    ``unused_steps`` (K,) int64, training steps since each code was last
    assigned; ``initialised``, whether the codebook has been seeded from data.
    Updates happen only in training mode, during ``forward``.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        reseed_dead: bool = True,
        dead_after: int = 100,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.reseed_dead, self.dead_after, self.eps = decay, reseed_dead, dead_after, eps
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.int64))
        self.register_buffer("initialised", torch.tensor(False))

    def nearest(self, flat: Tensor) -> Tensor:
        """Index (N,) int64 of the nearest code (L2) for each row of ``flat`` (N, d); float32 even under autocast."""
        with torch.autocast(flat.device.type, enabled=False):
            flat = flat.float()
            dist2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)[None]
        return dist2.argmin(1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors (B, d, h, w) for indices (B, h, w)."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize z_e (B, d, h, w) → (z_q straight-through (B, d, h, w), indices (B, h, w), commit scalar)."""
        b, d, h, w = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d).float()
        if self.training and not bool(self.initialised):
            with torch.no_grad():
                self._reseed(torch.ones_like(self.unused_steps, dtype=torch.bool), flat)
                self.initialised.fill_(True)
        idx = self.nearest(flat)
        codes = self.lookup(idx.view(b, h, w)).to(z_e.dtype)
        commit = F.mse_loss(z_e, codes.detach())
        z_q = z_e + (codes - z_e).detach()
        if self.training:
            with torch.no_grad():
                self._update(flat, idx)
        return z_q, idx.view(b, h, w), commit

    def _update(self, flat: Tensor, idx: Tensor) -> None:
        """EMA step with Laplace-smoothed counts, usage bookkeeping and dead-code re-seeding."""
        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        used = counts > 0
        self.unused_steps.add_(1).masked_fill_(used, 0)
        if self.reseed_dead:
            dead = self.unused_steps >= self.dead_after
            if bool(dead.any()):
                self._reseed(dead, flat)

    def _reseed(self, mask: Tensor, flat: Tensor) -> None:
        """Set the codes in ``mask`` (K,) bool to random rows of ``flat`` (N, d); rank 0's choice in DDP.

        Rows are drawn without replacement when N ≥ the number of codes, else with replacement.
        """
        which = mask.nonzero().squeeze(1)
        n, rows = which.numel(), flat.shape[0]
        pick = torch.randperm(rows)[:n] if rows >= n else torch.randint(rows, (n,))
        new = flat[pick.to(flat.device)].contiguous()
        if _distributed():
            dist.broadcast(new, src=0)
        self.codebook[which] = new
        self.ema_sum[which] = new
        self.ema_count[which] = 1.0
        self.unused_steps[which] = 0

    def usage(self, indices: Tensor) -> tuple[float, float]:
        """(fraction of the K codes used, perplexity exp(H(p))) of the code histogram of ``indices`` (any shape)."""
        counts = torch.bincount(indices.reshape(-1), minlength=self.codebook_size).double()
        p = counts / counts.sum().clamp_min(1)
        entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
        return float((counts > 0).double().mean()), float(entropy.exp())


class VQAutoencoder(nn.Module):
    """Encoder → EMA vector quantizer → decoder, with a contrastive projection head on ``z_q``."""

    def __init__(
        self,
        *,
        codebook_size: int = 1024,
        latent_dim: int = 32,
        downsample: int = 4,
        channels: list[int] | tuple[int, ...] = (64, 128),
        res_blocks: int = 1,
        ema_decay: float = 0.99,
        reseed_dead: bool = True,
        dead_after: int = 100,
        embed_dim: int = 64,
    ) -> None:
        super().__init__()
        channels = list(channels)
        steps = downsample_steps(downsample, len(channels))
        self.downsample = downsample
        self.encoder = Encoder(channels, res_blocks, steps, latent_dim)
        self.quantizer = EMAQuantizer(codebook_size, latent_dim, ema_decay, reseed_dead, dead_after)
        self.decoder = Decoder(channels, res_blocks, steps, latent_dim)
        self.head = nn.Sequential(nn.Conv2d(latent_dim, embed_dim, 1), nn.GELU(), nn.Conv2d(embed_dim, embed_dim, 1))

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected slices of shape (B, 1, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.downsample or x.shape[3] % self.downsample:
            raise ValueError(f"slice size {tuple(x.shape[2:])} is not divisible by downsample={self.downsample}")

    def forward(self, x: Tensor) -> VQOutput:
        """x (B, 1, H, W) in [0, 1] → ``VQOutput``; updates the codebook in training mode."""
        self._check(x)
        z_e = self.encoder(x)
        z_q, indices, commit = self.quantizer(z_e)
        embed = F.normalize(self.head(z_q), dim=1)
        return VQOutput(self.decoder(z_q), z_e, z_q, indices, commit, embed)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 1, H, W) → (code vectors z_q (B, d, h, w), indices (B, h, w)); never updates the codebook."""
        self._check(x)
        z_e = self.encoder(x)
        b, d, h, w = z_e.shape
        indices = self.quantizer.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)
        return self.quantizer.lookup(indices).to(z_e.dtype), indices

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q (B, d, h, w) → reconstruction (B, 1, H, W) in [0, 1]."""
        return self.decoder(z_q)

    def codebook_usage(self, indices: Tensor) -> tuple[float, float]:
        """(fraction of codes used, perplexity) of a batch of indices (B, h, w)."""
        return self.quantizer.usage(indices)


def build_vq(cfg: dict[str, Any]) -> VQAutoencoder:
    """Build the model from the resolved ``stage1`` section of params.yaml."""
    return VQAutoencoder(
        codebook_size=cfg["codebook_size"],
        latent_dim=cfg["latent_dim"],
        downsample=cfg["downsample"],
        channels=cfg["channels"],
        res_blocks=cfg["res_blocks"],
        ema_decay=cfg["codebook"]["ema_decay"],
        reseed_dead=cfg["codebook"]["reseed_dead"],
        dead_after=cfg["codebook"]["dead_after"],
        embed_dim=cfg["contrastive"]["embed_dim"],
    )


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with gradients off for all parameters; returns it."""
    model.eval()
    model.requires_grad_(False)
    return model
