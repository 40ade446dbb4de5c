"""FAA: equals an explicit cross-attention reference, shapes, dropout only in training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plaque.models.faa import FAA


def reference(faa: FAA, f_sam: torch.Tensor, f_vq: torch.Tensor) -> torch.Tensor:
    """The appendix's formula written out with an explicit softmax(QKᵀ/√d)V, using ``faa``'s weights."""
    b, n, c = f_sam.shape
    h = faa.heads
    d = c // h

    def ln(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, x.shape[1], h, d).permute(0, 2, 1, 3)

    q = split(ln(faa.norm_q, f_sam) @ faa.q_proj.weight.t() + faa.q_proj.bias)
    kv = ln(faa.norm_kv, f_vq)
    k = split(kv @ faa.k_proj.weight.t() + faa.k_proj.bias)
    v = split(kv @ faa.v_proj.weight.t() + faa.v_proj.bias)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    mhca = (attn @ v).permute(0, 2, 1, 3).reshape(b, n, c) @ faa.out_proj.weight.t() + faa.out_proj.bias
    fused = f_sam + mhca
    lin1, lin2 = faa.ffn[0], faa.ffn[2]
    hidden = F.gelu(ln(faa.norm_ffn, fused) @ lin1.weight.t() + lin1.bias)
    return fused + hidden @ lin2.weight.t() + lin2.bias


def randomised(dim: int = 16, **kw: object) -> FAA:
    torch.manual_seed(0)
    faa = FAA(dim, heads=4, **kw)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for p in faa.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return faa


def test_matches_explicit_reference_with_different_token_counts() -> None:
    faa = randomised().eval()
    f_sam, f_vq = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    with torch.no_grad():
        out = faa(f_sam, f_vq)
    assert out.shape == (2, 7, 16)
    torch.testing.assert_close(out, reference(faa, f_sam, f_vq), atol=1e-5, rtol=1e-5)


def test_forward_maps_shapes_and_agrees_with_tokens() -> None:
    faa = randomised(dim=32).eval()
    f_sam, f_vq = torch.randn(2, 32, 6, 5), torch.randn(2, 32, 3, 4)
    out = faa.forward_maps(f_sam, f_vq)
    assert out.shape == (2, 32, 6, 5)
    tokens = faa(f_sam.flatten(2).transpose(1, 2), f_vq.flatten(2).transpose(1, 2))
    torch.testing.assert_close(out, tokens.transpose(1, 2).reshape(2, 32, 6, 5))
    out.sum().backward()
    assert all(p.grad is not None for p in faa.parameters())


def test_dropout_only_in_training() -> None:
    faa = randomised(dropout=0.5)
    f_sam, f_vq = torch.randn(2, 9, 16), torch.randn(2, 4, 16)
    faa.eval()
    torch.testing.assert_close(faa(f_sam, f_vq), faa(f_sam, f_vq), atol=0, rtol=0)
    torch.testing.assert_close(faa(f_sam, f_vq), reference(faa, f_sam, f_vq), atol=1e-5, rtol=1e-5)
    faa.train()
    assert not torch.allclose(faa(f_sam, f_vq), faa(f_sam, f_vq))
    no_drop = randomised(dropout=0.0).train()
    torch.testing.assert_close(no_drop(f_sam, f_vq), reference(no_drop, f_sam, f_vq), atol=1e-5, rtol=1e-5)


def test_rejects_bad_widths() -> None:
    with pytest.raises(ValueError, match="divide"):
        FAA(18, heads=4)
    with pytest.raises(ValueError, match="channels"):
        FAA(16)(torch.randn(1, 3, 16), torch.randn(1, 3, 8))
