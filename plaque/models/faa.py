"""Feature-aware attention (FAA): SAM features query the frozen VQ prior by multi-head cross-attention.

Appendix 1.4 defines, on token sequences,

    F_fuse = F_sam + MHCA(LN(F_sam), LN(F_vq))
    F_out  = F_fuse + FFN(LN(F_fuse))

with queries from the SAM image embedding (B, N, C) and keys/values from the
adapted prior (B, M, C); N and M may differ. Each LN is its own LayerNorm.

Position. The formula leaves open whether attention knows where a token is.
On feature maps (``forward_maps``, the segmenter's path) a fixed 2D sinusoidal
encoding of each token's position (`grid_position_encoding`) is added to the
normalised queries and keys, not to the values, as SAM's own attention layers
add theirs; the prior map's positions are expressed in the SAM map's token
units, so a prior token and the SAM token over the same pixels get the same
encoding. Without it, attention retrieves by content alone, and a prior
resized to the SAM grid to be spatially aligned loses that alignment. Measured
on the demo (``ours``, 2 seeds, per-patient validation Dice, docs/training.md):
content-only attention learned no plaque with one of the two seeds; with the
encoding both seeds learned both plaque classes. Token sequences
(``forward`` without encodings) attend by content only.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``,
whose fused kernels do not materialise the N × M attention matrix.

Dropout (rate ``dropout``, active only in training mode) is applied to the two
residual branches: the MHCA output after its output projection and the FFN
output, each before its residual addition. The paper gives only the rate. We
keep dropout off the attention weights and the FFN's hidden layer: on the CPU,
attention-weight dropout forces SDPA's unfused path, which builds the
(B, heads, N, M) matrix, and the two of them made the block three times slower
(8 × 256 tokens, 2 cores: forward 56 ms with them, 16 ms without).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

POSITION_AMPLITUDE = 2.0  # of each sine and cosine; LayerNorm'd tokens have unit RMS per channel
POSITION_PERIODS = (2.0, 200.0)  # wavelengths from the first up to (not including) the second, in tokens


def grid_position_encoding(
    grid: tuple[int, int], dim: int, *, unit: tuple[int, int] | None = None, device: torch.device | None = None
) -> Tensor:
    """Fixed 2D sinusoidal encoding of the tokens of a ``grid`` (h, w) map in row-major order → (h·w, ``dim``).

    A quarter of the channels are sines and a quarter cosines of the row coordinate, the other half the same
    of the column, at wavelengths spaced geometrically over `POSITION_PERIODS`. Coordinates are token
    centres in units of the ``unit`` map (default: ``grid`` itself), so two maps covering the same image
    at different resolutions give the same encoding at the same place.
    """
    if dim % 4:
        raise ValueError(f"the position encoding needs a width divisible by 4, got {dim}")
    h, w = grid
    uh, uw = unit or grid
    quarter = dim // 4
    shortest, longest = POSITION_PERIODS
    wavelength = shortest * (longest / shortest) ** (torch.arange(quarter, device=device) / quarter)
    omega = 2 * math.pi / wavelength

    def axis(n: int, units: int) -> Tensor:
        centre = (torch.arange(n, device=device) + 0.5) * units / n - 0.5  # (n,), in units of the unit map
        angle = centre[:, None] * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)  # (n, dim / 2)

    rows = axis(h, uh)[:, None, :].expand(h, w, dim // 2)
    cols = axis(w, uw)[None, :, :].expand(h, w, dim // 2)
    return POSITION_AMPLITUDE * torch.cat([rows, cols], dim=-1).reshape(h * w, dim)


class FAA(nn.Module):
    """Pre-norm cross-attention block: SAM tokens (queries) attend to prior tokens (keys/values), then an FFN."""

    def __init__(self, dim: int, *, heads: int = 4, dropout: float = 0.1, ffn_ratio: int = 4) -> None:
        """
        Args:
            dim: channel width C of both token sequences.
            heads: attention heads; must divide ``dim``.
            dropout: dropout rate (see the module docstring for where it applies).
            ffn_ratio: FFN hidden width as a multiple of ``dim``.
        """
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_ratio * dim),
            nn.GELU(),
            nn.Linear(ffn_ratio * dim, dim),
            nn.Dropout(dropout),
        )

    def _heads(self, x: Tensor) -> Tensor:
        """(B, L, C) → (B, heads, L, C / heads)."""
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def attend(self, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """MHCA of already-normalised ``queries`` (B, N, C) over ``keys`` and ``values`` (B, M, C) → (B, N, C)."""
        q = self._heads(self.q_proj(queries))
        k = self._heads(self.k_proj(keys))
        v = self._heads(self.v_proj(values))
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.proj_drop(self.out_proj(out.transpose(1, 2).reshape(b, n, self.dim)))

    def forward(
        self, f_sam: Tensor, f_vq: Tensor, pos_sam: Tensor | None = None, pos_vq: Tensor | None = None
    ) -> Tensor:
        """Fuse SAM tokens ``f_sam`` (B, N, C) with prior tokens ``f_vq`` (B, M, C) → (B, N, C); position
        encodings ``pos_sam`` (N, C) and ``pos_vq`` (M, C), when given, are added to the normalised queries
        and keys (not to the values)."""
        if f_sam.shape[-1] != self.dim or f_vq.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {f_sam.shape[-1]} and {f_vq.shape[-1]}")
        queries, context = self.norm_q(f_sam), self.norm_kv(f_vq)
        keys = context if pos_vq is None else context + pos_vq
        fused = f_sam + self.attend(queries if pos_sam is None else queries + pos_sam, keys, context)
        return fused + self.ffn(self.norm_ffn(fused))

    def forward_maps(self, f_sam: Tensor, f_vq: Tensor) -> Tensor:
        """``forward`` on feature maps with their position encodings (`grid_position_encoding`, the prior's in
        the SAM map's token units): ``f_sam`` (B, C, H, W), ``f_vq`` (B, C, h, w) → (B, C, H, W)."""
        b, c, h, w = f_sam.shape
        grid, prior_grid = (h, w), (f_vq.shape[-2], f_vq.shape[-1])
        pos_sam = grid_position_encoding(grid, c, device=f_sam.device).to(f_sam.dtype)
        pos_vq = grid_position_encoding(prior_grid, c, unit=grid, device=f_sam.device).to(f_vq.dtype)
        out = self(f_sam.flatten(2).transpose(1, 2), f_vq.flatten(2).transpose(1, 2), pos_sam, pos_vq)
        return out.transpose(1, 2).reshape(b, c, h, w)
