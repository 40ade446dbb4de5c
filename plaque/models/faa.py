"""Feature-aware attention (FAA): SAM features query the frozen VQ prior by multi-head cross-attention.

Appendix 1.4 defines, on token sequences,

    F_fuse = F_sam + MHCA(LN(F_sam), LN(F_vq))
    F_out  = F_fuse + FFN(LN(F_fuse))

with queries from the SAM image embedding (B, N, C) and keys/values from the
adapted prior (B, M, C); N and M may differ. Each LN is its own LayerNorm.
No positional encoding is added (the formula has none): retrieval is by
content. In the segmenter the prior is resized to the SAM grid first, so there
M = N and the two maps are spatially aligned.

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

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


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

    def attend(self, queries: Tensor, context: Tensor) -> Tensor:
        """MHCA of already-normalised ``queries`` (B, N, C) over ``context`` (B, M, C) → (B, N, C)."""
        q = self._heads(self.q_proj(queries))
        k = self._heads(self.k_proj(context))
        v = self._heads(self.v_proj(context))
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.proj_drop(self.out_proj(out.transpose(1, 2).reshape(b, n, self.dim)))

    def forward(self, f_sam: Tensor, f_vq: Tensor) -> Tensor:
        """Fuse SAM tokens ``f_sam`` (B, N, C) with prior tokens ``f_vq`` (B, M, C) → (B, N, C)."""
        if f_sam.shape[-1] != self.dim or f_vq.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {f_sam.shape[-1]} and {f_vq.shape[-1]}")
        fused = f_sam + self.attend(self.norm_q(f_sam), self.norm_kv(f_vq))
        return fused + self.ffn(self.norm_ffn(fused))

    def forward_maps(self, f_sam: Tensor, f_vq: Tensor) -> Tensor:
        """``forward`` on feature maps: ``f_sam`` (B, C, H, W), ``f_vq`` (B, C, h, w) → (B, C, H, W)."""
        b, c, h, w = f_sam.shape
        out = self(f_sam.flatten(2).transpose(1, 2), f_vq.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(b, c, h, w)
