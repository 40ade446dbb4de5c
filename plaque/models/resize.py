"""Bilinear resizing of feature and logit maps, shared by the SAM input, the prior and the decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_bilinear(maps: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bilinearly resize maps (B, K, h, w) to ``size`` (align_corners=False; antialiased when shrinking).

    Returns the input unchanged when it already has that size. An antialiased shrink of bf16 maps on the CPU
    (PyTorch has no bf16 CPU kernel for it) runs in float32 and returns bf16.
    """
    size = _size(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    shrink = size[0] < maps.shape[-2] or size[1] < maps.shape[-1]
    if shrink and maps.device.type == "cpu" and maps.dtype == torch.bfloat16:
        return resize_bilinear(maps.float(), size).to(maps.dtype)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False, antialias=shrink)
