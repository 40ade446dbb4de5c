"""Masked-image modelling of a SAM encoder: block masks, the mask token, and the losses."""

from __future__ import annotations

import pytest
import torch

from plaque.models.mim import MaskedImageModel, block_mask, masked_l1, mim_loss
from plaque.models.sam import build_image_encoder


def test_block_masks_hide_whole_blocks_in_the_asked_share() -> None:
    mask = block_mask(6, 16, 2, 0.6, torch.Generator().manual_seed(0))
    assert mask.shape == (6, 16, 16) and mask.dtype == torch.bool
    blocks = mask.view(6, 8, 2, 8, 2)
    assert torch.equal(blocks.all(dim=(2, 4)), blocks.any(dim=(2, 4)))  # a block is hidden whole or not at all
    assert (mask.float().mean(dim=(1, 2)) == round(0.6 * 64) / 64).all()  # the same share in every mask
    assert not torch.equal(mask[0], mask[1])
    assert torch.equal(mask, block_mask(6, 16, 2, 0.6, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="ratio"):
        block_mask(1, 16, 2, 1.0)


def test_hidden_pixels_never_reach_the_encoder() -> None:
    """The mask token replaces a hidden patch's token, so nothing of its pixels can leak into any output."""
    torch.manual_seed(0)
    model = MaskedImageModel(build_image_encoder("vit_tiny", input_size=32, patch_size=4)).eval()
    mask = block_mask(2, 8, 2, 0.5, torch.Generator().manual_seed(1))
    x = torch.randn(2, 3, 32, 32)
    changed = x.clone()
    hidden = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand(-1, 3, -1, -1)
    changed[hidden] = torch.randn(int(hidden.sum()))
    with torch.no_grad():
        a, b = model(x, mask), model(changed, mask)
        c = model(changed, torch.zeros_like(mask))
    assert a.shape == (2, 1, 32, 32)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)  # unmasked, the same pixels do change the output


def test_losses() -> None:
    pred, target = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    target[..., :4, :] = 3.0  # top half off by 3, bottom half by 1
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    mask[0, 0, :] = True  # the top half's patches hidden (patch 4)
    assert float(masked_l1(pred, target, mask, 4)) == pytest.approx(3.0)
    assert float(mim_loss(pred, target)) == pytest.approx(2.0)
