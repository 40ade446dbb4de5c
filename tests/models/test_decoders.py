"""Multi-class decoders: logits shapes at demo and ViT-B sizes, resizing, gradients."""

from __future__ import annotations

import pytest
import torch

from plaque.models.decoders import ClassTokenDecoder, MultiClassHead
from plaque.models.resize import resize_bilinear


def small_token_decoder() -> ClassTokenDecoder:
    return ClassTokenDecoder(depth=1, num_heads=8, mlp_dim=64)


@pytest.mark.parametrize("make", [MultiClassHead, ClassTokenDecoder])
def test_demo_size_logits(make) -> None:
    torch.manual_seed(0)
    decoder = make()
    emb = torch.randn(2, 256, 32, 32, requires_grad=True)
    logits = decoder(emb, 128)
    assert logits.shape == (2, 5, 128, 128)
    assert logits.shape == decoder(emb, (128, 128)).shape
    logits.square().mean().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()
    assert all(p.grad is not None for p in decoder.parameters())


@pytest.mark.parametrize("make", [MultiClassHead, ClassTokenDecoder])
def test_vit_b_size_forward(make) -> None:
    decoder = make().eval()
    with torch.no_grad():
        logits = decoder(torch.randn(1, 256, 64, 64), 1024)
    assert logits.shape == (1, 5, 1024, 1024) and torch.isfinite(logits).all()


@pytest.mark.parametrize("make", [MultiClassHead, small_token_decoder])
def test_output_size_is_any_resolution(make) -> None:
    decoder = make().eval()
    emb = torch.randn(1, 256, 8, 8)
    assert decoder(emb, 32).shape == (1, 5, 32, 32)  # native 4g grid, no resampling
    assert decoder(emb, 20).shape == (1, 5, 20, 20)
    assert decoder(emb, (48, 40)).shape == (1, 5, 48, 40)


def test_class_token_outputs_depend_on_their_token() -> None:
    torch.manual_seed(0)
    decoder = small_token_decoder().eval()
    emb = torch.randn(1, 256, 8, 8)
    before = decoder(emb, 32)
    with torch.no_grad():
        decoder.class_tokens.weight[3] += 1.0
    after = decoder(emb, 32)
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_resize_bilinear() -> None:
    x = torch.randn(2, 5, 16, 16)
    assert resize_bilinear(x, 16) is x
    const = torch.full((1, 5, 32, 32), 2.5)
    torch.testing.assert_close(resize_bilinear(const, 8), torch.full((1, 5, 8, 8), 2.5))
    torch.testing.assert_close(resize_bilinear(const, 64), torch.full((1, 5, 64, 64), 2.5))


def test_rejects_width_not_multiple_of_8() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        MultiClassHead(embed_dim=20)
