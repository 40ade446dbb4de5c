"""SAM's image-encoder attention on PyTorch's fused scaled-dot-product kernels.

`segment_anything`'s ``Attention`` forms the attention logits explicitly: ``(q·scale) @ kᵀ``, plus the
decomposed relative-position term (``add_decomposed_rel_pos``), then a softmax. In a global block at
1024² input that is a (B·heads, 4096, 4096) tensor, kept for the backward pass in every global block:
a ViT-B training step at batch 8 under bf16 autocast peaked at 64 GiB on an H200 with it.

`SdpaAttention` computes the same function without any (N, N) tensor. SAM's relative-position term
for query i at grid cell (h_i, w_i) and key j at (h_j, w_j) is

    bias[i, j] = q_i · R_h[h_i − h_j] + q_i · R_w[w_i − w_j] = rel_h[i, h_j] + rel_w[i, w_j],

with ``rel_h`` (N, h) and ``rel_w`` (N, w) the query's scores against every row and column offset.
It is folded into the dot product: each query is extended by its ``h + w`` scores, each key by the
one-hot codes of its row and column, so that

    [scale·q_i, rel_h[i], rel_w[i]] · [k_j, onehot(h_j), onehot(w_j)] = scale·q_i·k_j + bias[i, j].

The extended heads (rounded up to a multiple of 8 channels, values zero-padded to the same width)
go to ``F.scaled_dot_product_attention`` with scale 1 and no mask, which makes them eligible for
the flash and memory-efficient kernels (a 1024² ViT-B global block: 64 + 64 + 64 = 192 channels).

An optional prompt token (CAT-SAM's prompt bridge) is prepended to every sequence with zero
positional channels, so its row and column of the bias are zero; its own output is dropped.

The folding makes the kernels do more than SAM's work: a 1024² ViT-B global block multiplies 192
channels per query-key pair where SAM multiplies 64 and adds the bias. ``kernel="flex"`` instead adds
``rel_h[i, h_j] + rel_w[i, w_j]`` to each logit inside ``torch.nn.attention.flex_attention`` through a
``score_mod`` that reads the two small tables, so the q·k product keeps SAM's 64 channels. It is compiled
on a GPU; elsewhere flex attention runs PyTorch's unfused reference, forward only (PyTorch has no flex
backward on the CPU): the tests check its forward against SAM's attention in float64 on the CPU, and
forward and gradients within bf16 tolerance on a GPU. The folded path stays the default until the flex
kernel is measured on a GPU (``benchmarks``: ``--attention flex``).
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import Tensor, nn
from torch.nn.attention.flex_attention import flex_attention

CHANNEL_MULTIPLE = 8  # the fused kernels want head widths that are multiples of 8
KERNELS = ("folded", "flex")  # how SAM's relative-position term reaches the fused attention (module docstring)


def check_kernel(kernel: str) -> str:
    """``kernel`` when it is one of `KERNELS`; else ``ValueError``."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


@functools.cache
def _compiled_flex_attention() -> object:
    """``flex_attention`` compiled once per process (its fused GPU kernel)."""
    return torch.compile(flex_attention, dynamic=False)


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, score_mod: object, scale: float) -> Tensor:
    """Flex attention: the compiled kernel on a GPU, PyTorch's unfused reference elsewhere (quietly)."""
    if q.is_cuda:
        return _compiled_flex_attention()(q, k, v, score_mod=score_mod, scale=scale)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise RuntimeError("the flex attention kernel trains on a GPU only; use the folded kernel on the CPU")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention.*")
        return flex_attention(q, k, v, score_mod=score_mod, scale=scale)


def _pad_channels(t: Tensor, width: int) -> Tensor:
    """``t`` (..., c) zero-padded to (..., width)."""
    return F.pad(t, (0, width - t.shape[-1]))


def grid_codes(size: tuple[int, int], *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """One-hot row and column of each cell of an h × w grid, row-major: (h·w, h + w)."""
    h, w = size
    cells = torch.arange(h * w, device=device)
    return torch.cat([F.one_hot(cells // w, h), F.one_hot(cells % w, w)], dim=-1).to(dtype)


class SdpaAttention(nn.Module):
    """SAM's ``Attention`` as fused SDPA: tokens (B, h, w, C) → (B, h, w, C), optionally with a prompt token.

    Takes over the modules and parameters of a `segment_anything` ``Attention`` (``qkv``, ``proj``,
    ``rel_pos_h``, ``rel_pos_w``), so state-dict keys, weight loading and LoRA on ``qkv`` are unchanged.
    """

    def __init__(self, attn: Attention, kernel: str = "folded") -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self.num_heads = attn.num_heads
        self.scale = attn.scale
        self.qkv = attn.qkv
        self.proj = attn.proj
        self.use_rel_pos = attn.use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h = attn.rel_pos_h
            self.rel_pos_w = attn.rel_pos_w

    def rel_tables(self, grid_q: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The grid queries' scores (B, heads, h·w, h) and (B, heads, h·w, w) against every row and column
        offset: ``rel_h[i, h_j]`` and ``rel_w[i, w_j]`` of the module docstring, from queries (B, heads, h·w, hd)."""
        b, heads, _, hd = grid_q.shape
        h, w = size
        grid = grid_q.reshape(b, heads, h, w, hd)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid, get_rel_pos(h, h, self.rel_pos_h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid, get_rel_pos(w, w, self.rel_pos_w))
        return rel_h.reshape(b, heads, h * w, h), rel_w.reshape(b, heads, h * w, w)

    def fold_rel_pos(self, q: Tensor, k: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Queries and keys (B, heads, P + h·w, hd), P prompt tokens first, → extended (B, heads, P + h·w, hd + h + w)
        whose dot product is ``scale·q·k`` plus SAM's relative-position term (zero on the prompt's row and column)."""
        b, heads, total, hd = q.shape
        h, w = size
        prefix = total - h * w
        rel = torch.cat(self.rel_tables(q[:, :, prefix:], size), dim=-1)
        codes = grid_codes(size, device=k.device, dtype=k.dtype)
        rel, codes = F.pad(rel, (0, 0, prefix, 0)), F.pad(codes, (0, 0, prefix, 0))
        q = torch.cat([q * self.scale, rel.to(q.dtype)], dim=-1)
        k = torch.cat([k, codes.expand(b, heads, total, h + w)], dim=-1)
        return q, k

    def flex_rel_pos(self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
        """Attention of queries, keys and values (B, heads, P + h·w, hd), P prompt tokens first, with SAM's
        relative-position term added to each logit by flex attention's ``score_mod`` (zero on the prompt's row
        and column) → (B, heads, P + h·w, hd)."""
        prefix = q.shape[2] - size[0] * size[1]
        rel_h, rel_w = self.rel_tables(q[:, :, prefix:], size)
        w = size[1]

        def score_mod(score: Tensor, b: Tensor, head: Tensor, i: Tensor, j: Tensor) -> Tensor:
            qi, kj = (i - prefix).clamp(min=0), (j - prefix).clamp(min=0)
            bias = rel_h[b, head, qi, kj // w] + rel_w[b, head, qi, kj % w]
            return torch.where((i >= prefix) & (j >= prefix), score + bias.to(score.dtype), score)

        return _flex_attention(q, k, v, score_mod, self.scale)

    def forward(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        """Tokens ``x`` (B, h, w, C), a grid (global block) or a batch of windows → (B, h, w, C).

        ``prompt`` (C,), if given, is prepended to every sequence; its key and value come from the same
        ``qkv``, it gets no relative-position term, and its own output is dropped.
        """
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        if prompt is not None:
            tokens = torch.cat([prompt.to(tokens.dtype).expand(b, 1, c), tokens], dim=1)
        total = tokens.shape[1]
        q, k, v = self.qkv(tokens).reshape(b, total, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        hd = v.shape[-1]
        if self.use_rel_pos and self.kernel == "flex":
            out = self.flex_rel_pos(q, k, v, (h, w))
        elif self.use_rel_pos:
            q, k = self.fold_rel_pos(q, k, (h, w))
            width = -(-q.shape[-1] // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
            out = F.scaled_dot_product_attention(
                _pad_channels(q, width), _pad_channels(k, width), _pad_channels(v, width), scale=1.0
            )[..., :hd]
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out[:, :, total - h * w :].transpose(1, 2).reshape(b, h, w, c)  # (B, h, w, C)
        return self.proj(out)


def use_sdpa_attention(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """Replace every block's ``attn`` of ``encoder`` by `SdpaAttention` on the same parameters (in place)."""
    for block in encoder.blocks:
        if not isinstance(block.attn, SdpaAttention):
            block.attn = SdpaAttention(block.attn)
    return encoder


def set_attention_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Make every `SdpaAttention` of ``model`` use ``kernel`` (one of `KERNELS`); returns ``model``."""
    check_kernel(kernel)
    for module in model.modules():
        if isinstance(module, SdpaAttention):
            module.kernel = kernel
    return model
