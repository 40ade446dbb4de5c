"""FAA: equals an explicit cross-attention reference, shapes, dropout only in training, and positions
that make an aligned prior count where it lies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plaque.models.faa import FAA, grid_position_encoding


def reference(
    faa: FAA,
    f_sam: torch.Tensor,
    f_vq: torch.Tensor,
    pos_sam: torch.Tensor | float = 0.0,
    pos_vq: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The appendix's formula written out with an explicit softmax(QKᵀ/√d)V, using ``faa``'s weights; position
    encodings added to the normalised queries and keys."""
    b, n, c = f_sam.shape
    h = faa.heads
    d = c // h

    def ln(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, x.shape[1], h, d).permute(0, 2, 1, 3)

    q = split((ln(faa.norm_q, f_sam) + pos_sam) @ faa.q_proj.weight.t() + faa.q_proj.bias)
    kv = ln(faa.norm_kv, f_vq)
    k = split((kv + pos_vq) @ faa.k_proj.weight.t() + faa.k_proj.bias)
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


def test_forward_maps_shapes_and_agrees_with_tokens_and_their_positions() -> None:
    faa = randomised(dim=32).eval()
    f_sam, f_vq = torch.randn(2, 32, 6, 5), torch.randn(2, 32, 3, 4)
    out = faa.forward_maps(f_sam, f_vq)
    assert out.shape == (2, 32, 6, 5)
    pos_sam = grid_position_encoding((6, 5), 32)
    pos_vq = grid_position_encoding((3, 4), 32, unit=(6, 5))
    tokens = faa(f_sam.flatten(2).transpose(1, 2), f_vq.flatten(2).transpose(1, 2), pos_sam, pos_vq)
    torch.testing.assert_close(out, tokens.transpose(1, 2).reshape(2, 32, 6, 5))
    expected = reference(faa, f_sam.flatten(2).transpose(1, 2), f_vq.flatten(2).transpose(1, 2), pos_sam, pos_vq)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)
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


def test_positions_make_the_aligned_prior_count_where_it_lies() -> None:
    """Content-only attention cannot tell where a prior token sits: shuffling the prior's tokens leaves it
    unchanged. With positions, the same shuffle changes the fused map."""
    faa = randomised(dim=32).eval()
    f_sam, f_vq = torch.randn(1, 32, 4, 4), torch.randn(1, 32, 4, 4)
    shuffled = f_vq.flatten(2)[:, :, torch.randperm(16, generator=torch.Generator().manual_seed(1))].reshape(
        1, 32, 4, 4
    )
    tokens = lambda m: m.flatten(2).transpose(1, 2)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(faa(tokens(f_sam), tokens(f_vq)), faa(tokens(f_sam), tokens(shuffled)))
        assert not torch.allclose(faa.forward_maps(f_sam, f_vq), faa.forward_maps(f_sam, shuffled), atol=1e-3)


def test_position_encoding_in_the_query_maps_units() -> None:
    pos = grid_position_encoding((4, 6), 16)
    assert pos.shape == (24, 16)
    grid = pos.reshape(4, 6, 16)
    assert torch.equal(grid[:, 0, :8], grid[:, 5, :8]) and torch.equal(grid[0, :, 8:], grid[3, :, 8:])  # rows, columns
    torch.testing.assert_close(grid[0, 0, :4], 2.0 * torch.zeros(4).sin())  # token 0 sits at coordinate 0
    # a half-resolution map: its first token covers query tokens 0 and 1, so it sits at 0.5
    coarse = grid_position_encoding((2, 3), 16, unit=(4, 6)).reshape(2, 3, 16)
    omega = 2 * math.pi / (2.0 * 100.0 ** (torch.arange(4) / 4))
    torch.testing.assert_close(coarse[0, 0, :4], 2.0 * (0.5 * omega).sin())
    torch.testing.assert_close(coarse[1, 2, 12:], 2.0 * (4.5 * omega).cos())
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_position_encoding((2, 2), 18)
