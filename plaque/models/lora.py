"""Low-rank adaptation of a SAM image encoder (as in SAMed) and the choice of what trains.

Each block's fused ``attn.qkv`` projection, (…, C) → (…, 3C) laid out as
``[q | k | v]``, is replaced by `LoRAQKV`, which adds rank-r updates to the q and
v parts only::

    q = W_q x + b_q + B_q A_q x        k = W_k x + b_k        v = W_v x + b_v + B_v A_v x

``A`` (r, C) is Kaiming-uniform initialised and ``B`` (C, r) is zero, so the
output equals the original at initialisation; there is no α/r scaling. The base
``weight`` and ``bias`` are the original parameters under the original names, so
an encoder's state_dict keeps its official keys and adds ``lora_{q,v}_{a,b}``.
Load official weights before applying LoRA (loading is strict).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import Tensor

from plaque.errors import InputError

TUNING_MODES = ("lora", "frozen", "full")


class LoRAQKV(nn.Module):
    """A fused qkv Linear (C → 3C) with low-rank updates on q and v: (…, C) → (…, 3C).

    Attributes:
        weight, bias: the wrapped Linear's parameters (3C, C) and (3C,), unchanged.
        lora_q_a, lora_v_a: (r, C), Kaiming-uniform. lora_q_b, lora_v_b: (C, r), zeros.
    """

    def __init__(self, base: nn.Linear, *, rank: int) -> None:
        super().__init__()
        dim = base.in_features
        if base.out_features != 3 * dim:
            raise ValueError(f"expected a fused qkv Linear {dim} → {3 * dim}, got {dim} → {base.out_features}")
        self.weight = base.weight
        self.bias = base.bias
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_q_a = nn.Parameter(torch.empty(rank, dim, **like))
        self.lora_q_b = nn.Parameter(torch.zeros(dim, rank, **like))
        self.lora_v_a = nn.Parameter(torch.empty(rank, dim, **like))
        self.lora_v_b = nn.Parameter(torch.zeros(dim, rank, **like))
        for a in (self.lora_q_a, self.lora_v_a):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def lora_parameters(self) -> list[nn.Parameter]:
        """``[lora_q_a, lora_q_b, lora_v_a, lora_v_b]``."""
        return [self.lora_q_a, self.lora_q_b, self.lora_v_a, self.lora_v_b]

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = F.linear(x, self.weight, self.bias).chunk(3, dim=-1)
        q = q + F.linear(F.linear(x, self.lora_q_a), self.lora_q_b)
        v = v + F.linear(F.linear(x, self.lora_v_a), self.lora_v_b)
        return torch.cat([q, k, v], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.weight.shape[1]}, rank={self.lora_q_a.shape[0]}"


def apply_lora(encoder: ImageEncoderViT, rank: int) -> list[nn.Parameter]:
    """Wrap every block's ``attn.qkv`` in `LoRAQKV` (in place) and return the new LoRA parameters.

    Raises:
        InputError: ``rank`` < 1.
        ValueError: the encoder already carries LoRA.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError("stage2.lora_rank", f"expected a positive integer, got {rank!r}")
    params: list[nn.Parameter] = []
    for block in encoder.blocks:
        if isinstance(block.attn.qkv, LoRAQKV):
            raise ValueError("the encoder already carries LoRA")
        block.attn.qkv = LoRAQKV(block.attn.qkv, rank=rank)
        params += block.attn.qkv.lora_parameters()
    return params


def configure_tuning(encoder: ImageEncoderViT, mode: str, rank: int) -> list[nn.Parameter]:
    """Set ``requires_grad`` on ``encoder`` for ``mode`` and return its trainable parameters.

    ``lora``: LoRA is applied (rank ``rank``) and only its parameters train; ``frozen``: nothing
    trains; ``full``: every parameter trains (``rank`` is then unused).

    Raises:
        InputError: unknown ``mode`` or, for ``lora``, a bad ``rank``.
    """
    if mode not in TUNING_MODES:
        raise InputError("stage2.sam_tuning", f"{mode!r} is not one of {list(TUNING_MODES)}")
    params = apply_lora(encoder, rank) if mode == "lora" else []
    encoder.requires_grad_(mode == "full")
    for p in params:
        p.requires_grad_(True)
    return list(encoder.parameters()) if mode == "full" else params
