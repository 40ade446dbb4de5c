"""Stage-1 VQ autoencoder: shapes, nearest-code quantization, straight-through gradients, EMA codebook, code health."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from plaque.config import load_config
from plaque.models.vq import EMAQuantizer, VQAutoencoder, build_vq, downsample_steps, freeze
from tests.gloo import run_on_ranks


def small(**kw: object) -> VQAutoencoder:
    args: dict = dict(codebook_size=16, latent_dim=4, downsample=4, channels=[8, 16], res_blocks=1, embed_dim=8)
    args.update(kw)
    torch.manual_seed(0)
    return VQAutoencoder(**args)


def quantizer(codebook: list[list[float]], **kw: object) -> EMAQuantizer:
    """A trained-mode quantizer with the given codebook, already seeded (no data initialisation)."""
    q = EMAQuantizer(len(codebook), len(codebook[0]), **kw)
    q.codebook.copy_(torch.tensor(codebook))
    q.ema_sum.copy_(q.codebook)
    q.initialised.fill_(True)
    return q.train()


def as_latent(points: torch.Tensor) -> torch.Tensor:
    """(N, d) points → (1, d, 1, N) latent map."""
    return points.t()[None, :, None, :].contiguous()


def test_forward_shapes_and_dtypes() -> None:
    model = small()
    x = torch.rand(2, 1, 32, 32)
    for train in (True, False):
        out = model.train(train)(x)
        assert out.recon.shape == (2, 1, 32, 32) and out.recon.dtype == torch.float32
        assert 0 <= float(out.recon.detach().min()) and float(out.recon.detach().max()) <= 1
        assert out.z_e.shape == out.z_q.shape == (2, 4, 8, 8)
        assert out.indices.shape == (2, 8, 8) and out.indices.dtype == torch.int64
        assert 0 <= int(out.indices.min()) and int(out.indices.max()) < 16
        assert out.commit.shape == () and float(out.commit.detach()) >= 0
        assert out.embed.shape == (2, 8, 8, 8)
        torch.testing.assert_close(out.embed.norm(dim=1), torch.ones(2, 8, 8))
    z_q, indices = model.encode(x)
    assert z_q.shape == (2, 4, 8, 8) and indices.shape == (2, 8, 8) and indices.dtype == torch.int64


def test_build_vq_follows_params() -> None:
    cfg = load_config()["stage1"]
    model = build_vq(cfg).eval()
    out = model(torch.rand(1, 1, 64, 64))
    side = 64 // cfg["downsample"]
    assert out.z_q.shape == (1, cfg["latent_dim"], side, side)
    assert out.embed.shape == (1, cfg["contrastive"]["embed_dim"], side, side)
    assert model.quantizer.codebook.shape == (cfg["codebook_size"], cfg["latent_dim"])


@pytest.mark.parametrize("downsample,channels", [(1, [8]), (2, [8, 16]), (8, [8, 16]), (16, [8])])
def test_downsample_factor(downsample: int, channels: list[int]) -> None:
    model = small(downsample=downsample, channels=channels, res_blocks=0).eval()
    out = model(torch.rand(1, 1, 32, 32))
    assert out.z_q.shape[-2:] == (32 // downsample, 32 // downsample)
    assert out.recon.shape == (1, 1, 32, 32)
    assert sum(downsample_steps(downsample, len(channels))) == int(math.log2(downsample))


def test_rejects_bad_inputs() -> None:
    model = small()
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="B, 1, H, W"):
        model(torch.rand(1, 3, 32, 32))


def test_indices_are_the_nearest_codes() -> None:
    model = small().eval()
    out = model(torch.rand(3, 1, 32, 32))
    flat = out.z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    dist = torch.cdist(flat, model.quantizer.codebook)
    chosen = dist.gather(1, out.indices.reshape(-1, 1)).squeeze(1)
    torch.testing.assert_close(chosen, dist.min(1).values, atol=1e-5, rtol=0)
    codes = model.quantizer.codebook[out.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(out.z_q, codes, atol=1e-6, rtol=0)


def test_encode_matches_forward_in_eval() -> None:
    model = small().eval()
    x = torch.rand(2, 1, 32, 32)
    out = model(x)
    z_q, indices = model.encode(x)
    assert torch.equal(indices, out.indices)
    torch.testing.assert_close(z_q, out.z_q)


def test_straight_through_gradient_reaches_encoder() -> None:
    model = small()
    out = model(torch.rand(2, 1, 32, 32))
    out.recon.mean().backward()
    grad = model.encoder.stem.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    model.zero_grad()
    out = model(torch.rand(2, 1, 32, 32))
    out.embed[:, 0].sum().backward()  # the contrastive path also reaches the encoder through z_q
    assert float(model.encoder.stem.weight.grad.abs().sum()) > 0
    assert not any(b.requires_grad for b in model.quantizer.buffers())


def test_first_training_batch_seeds_the_codebook() -> None:
    model = small()
    model.eval()(torch.rand(1, 1, 32, 32))
    assert not bool(model.quantizer.initialised)
    model.train()(torch.rand(2, 1, 32, 32))
    assert bool(model.quantizer.initialised)
    q = EMAQuantizer(8, 2, decay=1.0).train()  # decay 1 freezes the EMA: the codes stay as seeded
    points = torch.randn(20, 2)
    q(as_latent(points))
    assert float(torch.cdist(q.codebook, points).min(1).values.max()) < 1e-4
    assert len({tuple(c) for c in q.codebook.tolist()}) == 8  # drawn without replacement


def test_ema_moves_a_used_code_toward_its_inputs() -> None:
    q = quantizer([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]], decay=0.5, reseed_dead=False)
    points = torch.tensor([[1.0, 1.0]]) + 0.1 * torch.randn(6, 2)
    _, indices, _ = q(as_latent(points))
    assert indices.eq(0).all()
    target = points.mean(0)
    assert float((q.codebook[0] - target).norm()) < 0.5 * float(target.norm())
    torch.testing.assert_close(
        q.codebook[1:], torch.tensor([[10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]]), atol=1e-3, rtol=1e-3
    )
    for _ in range(10):
        q(as_latent(points))
    torch.testing.assert_close(q.codebook[0], target, atol=1e-3, rtol=1e-3)


def test_eval_mode_leaves_the_codebook_alone() -> None:
    q = quantizer([[0.0, 0.0], [10.0, 10.0]]).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(as_latent(torch.randn(5, 2)))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


def run_dead_codes(reseed: bool, seed: int = 0) -> tuple[EMAQuantizer, list[float]]:
    torch.manual_seed(seed)
    q = quantizer([[0.0, 0.0]] + [[100.0 + i, 100.0] for i in range(7)], reseed_dead=reseed, dead_after=3)
    points = torch.randn(64, 2)
    usage = []
    for _ in range(5):
        _, indices, _ = q(as_latent(points))
        usage.append(q.usage(indices)[0])
    return q, usage


def test_dead_codes_are_reseeded_from_the_batch() -> None:
    q, usage = run_dead_codes(reseed=True)
    assert usage[0] == 1 / 8 and usage[-1] > 0.5
    assert float(q.codebook.abs().max()) < 10  # the far codes now sit among the inputs
    again, _ = run_dead_codes(reseed=True)
    assert torch.equal(q.codebook, again.codebook)  # deterministic given the torch RNG


def test_dead_codes_stay_without_reseeding() -> None:
    q, usage = run_dead_codes(reseed=False)
    assert usage == [1 / 8] * 5
    assert float(q.codebook[1:, 0].min()) > 99
    assert int(q.unused_steps[1:].min()) == 5


def test_codebook_usage_on_known_histograms() -> None:
    model = small()
    fraction, perplexity = model.codebook_usage(torch.tensor([[0, 1], [2, 3]]).repeat(2, 1, 1))
    assert fraction == 4 / 16 and perplexity == pytest.approx(4.0)
    fraction, perplexity = model.codebook_usage(torch.full((2, 3, 3), 5))
    assert fraction == 1 / 16 and perplexity == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    fraction, perplexity = model.codebook_usage(torch.tensor([[[0, 0, 1, 2]]]))
    assert perplexity == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


def test_state_dict_restores_the_codebook() -> None:
    model = small()
    model(torch.rand(2, 1, 32, 32))
    state = model.state_dict()
    assert {
        "quantizer.codebook",
        "quantizer.ema_count",
        "quantizer.ema_sum",
        "quantizer.unused_steps",
        "quantizer.initialised",
    } <= set(state)
    other = small(codebook_size=16)
    other.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model.eval().encode(x)[1], other.eval().encode(x)[1])


def test_freeze() -> None:
    model = freeze(small())
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def _quantizer_on_rank(rank: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    q = EMAQuantizer(8, 2, decay=0.9, dead_after=2).train()
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees its own batches
    for _ in range(6):
        q(as_latent(torch.randn(16 + 4 * rank, 2, generator=g) * (1 + rank)))
    return q.state_dict()


def test_ranks_hold_the_same_codebook_under_ddp(tmp_path: Path) -> None:
    a, b = run_on_ranks(_quantizer_on_rank, tmp_path)
    assert bool(a["initialised"]) and int(a["unused_steps"].max()) < 2
    for key in a:
        assert torch.equal(a[key], b[key]), key
