"""Masked-image modelling (SimMIM) of a SAM image encoder: the pretraining of the demo's SAM stand-in.

SAM's image encoder began as an MAE-pretrained plain ViT that was windowed afterwards. MAE drops the
masked tokens, which SAM's windowed attention and relative positions cannot do without; SimMIM (Xie
et al., CVPR 2022) keeps every token and replaces the masked ones by a learned mask token, so it runs
on SAM's encoder unchanged, windows, relative positions and neck included.

Shapes, for SAM inputs ``x`` (B, 3, S, S) (`plaque.models.sam.sam_input`), patch size p and grid
g = S / p:

1. ``patch_embed(x)`` → tokens (B, g, g, C); tokens where ``mask`` (B, g, g) is true are replaced by
   ``mask_token`` (C,); SAM's absolute positions are added; the blocks and the neck run as in SAM
   → (B, 256, g, g).
2. A 1×1 convolution (256 → p²) and a pixel shuffle predict the first input channel (all three are
   the same grey slice) → (B, 1, S, S).
3. The loss is the mean absolute error over every pixel, hidden and visible (`mim_loss`). SimMIM's own
   loss counts the hidden pixels only; on the demo's budget (240 steps of 32 slices on 2 CPU cores) that
   left the encoder filling every hidden patch with the image's median (masked L1 0.200, the median's
   0.196) and a linear probe of its features found no class at all, where a random encoder's features
   give a macro Dice of 0.51. With the visible pixels counted too, the same budget gives a masked L1 of
   0.117, below what a Gaussian interpolation of the visible pixels achieves (0.132): the encoder
   learns to inpaint. `masked_l1` stays the measure of that.

Masks hide square blocks of ``block`` × ``block`` tokens until ``ratio`` of the grid is hidden
(`block_mask`). After pretraining only ``encoder`` is kept (`plaque.models.sam.save_sam_image_encoder`):
the mask token and the pixel head are pretraining scaffolding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import Tensor


def block_mask(batch: int, grid: int, block: int, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Random masks (batch, grid, grid) bool hiding ``round(ratio · cells)`` blocks of ``block`` × ``block`` tokens.

    The grid is cut into ``ceil(grid / block)``² cells; each mask hides a uniformly drawn subset of
    them (drawn with ``generator``, on the CPU), so every mask hides the same number of blocks.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
    if block < 1:
        raise ValueError(f"mask block must be positive, got {block}")
    cells = math.ceil(grid / block)
    hidden = max(1, round(ratio * cells * cells))
    order = torch.rand(batch, cells * cells, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, cells * cells, dtype=torch.bool)
    mask.scatter_(1, order[:, :hidden], True)
    mask = mask.view(batch, cells, cells).repeat_interleave(block, 1).repeat_interleave(block, 2)
    return mask[:, :grid, :grid]


class MaskedImageModel(nn.Module):
    """SimMIM around a SAM image encoder: (B, 3, S, S) inputs and (B, g, g) masks → (B, 1, S, S) pixels."""

    def __init__(self, encoder: ImageEncoderViT) -> None:
        """
        Args:
            encoder: a SAM image encoder (`plaque.models.sam.build_image_encoder`); trained in place.
        """
        super().__init__()
        self.encoder = encoder
        self.patch = int(encoder.patch_embed.proj.kernel_size[0])
        width = encoder.patch_embed.proj.out_channels
        self.mask_token = nn.Parameter(torch.zeros(width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Conv2d(encoder.neck[0].out_channels, self.patch * self.patch, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """SAM inputs (B, 3, S, S), mask (B, g, g) bool (true = hidden) → predicted first channel (B, 1, S, S)."""
        tokens = self.encoder.patch_embed(x)  # (B, g, g, C)
        if mask.shape != tokens.shape[:3]:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit the token grid {tuple(tokens.shape[:3])}")
        tokens = torch.where(mask[..., None].to(tokens.device), self.mask_token.to(tokens.dtype), tokens)
        if self.encoder.pos_embed is not None:
            tokens = tokens + self.encoder.pos_embed
        for block in self.encoder.blocks:
            tokens = block(tokens)
        features = self.encoder.neck(tokens.permute(0, 3, 1, 2))  # (B, 256, g, g)
        return F.pixel_shuffle(self.head(features), self.patch)


def mim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The pretraining loss: mean absolute error of ``pred`` against ``target`` (both (B, 1, S, S)) over all pixels."""
    return (pred - target).abs().mean()


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor, patch: int) -> Tensor:
    """Mean absolute error of ``pred`` against ``target`` (both (B, 1, S, S)) over the pixels of masked tokens.

    ``mask`` (B, g, g) bool is expanded to pixels by ``patch``; SimMIM's loss.
    """
    pixels = mask.to(pred.device, pred.dtype).repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None]
    return ((pred - target).abs() * pixels).sum() / pixels.sum().clamp_min(1.0)
