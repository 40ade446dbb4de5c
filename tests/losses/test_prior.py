"""Stage-1 losses: latent label alignment, hard-class sampling, SupCon, the combined loss, the prototype probe."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from plaque.config import load_config
from plaque.losses.perceptual import Perceptual
from plaque.losses.prior import (
    Stage1Loss,
    labels_to_latent,
    sample_hard_cells,
    sample_hard_classes,
    supcon_loss,
)
from plaque.models.vq import VQAutoencoder


class FakePerceptual(nn.Module):
    """Stands in for LPIPS: mean squared error."""

    backbone = "random"

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (recon - target).pow(2).mean()


def stage1_cfg(**loss: float) -> dict:
    cfg = copy.deepcopy(load_config()["stage1"])
    cfg["loss"].update(loss)
    return cfg


def phantom_batch(n: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic cross-sections: bright lumen disk, thin wall ring, a calcified or non-calcified plaque."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, labels = [], []
    for i in range(n):
        cy, cx = (size / 2 + torch.randn(2, generator=g) * 2).tolist()
        r = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        lab = torch.zeros(size, size, dtype=torch.int64)
        lab[r < size / 4 + 2] = 1
        lab[r < size / 4] = 2
        plaque = (r >= size / 4) & (r < size / 4 + 2) & (xx > cx + 2)
        lab[plaque] = 3 if i % 2 else 4
        img = torch.tensor([0.1, 0.35, 0.7, 0.95, 0.25])[lab] + 0.03 * torch.randn(size, size, generator=g)
        images.append(img.clamp(0, 1))
        labels.append(lab)
    return torch.stack(images)[:, None], torch.stack(labels)


# labels_to_latent -------------------------------------------------------------------------------


def test_labels_to_latent_takes_the_rarest_class_per_cell() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    labels[0, 0, 3] = 1  # top-left: background + one wall pixel -> wall
    labels[0, :4, 4:] = 2  # top-right: lumen + wall -> wall
    labels[0, 3, 7] = 1
    labels[0, 4:, :4] = 2  # bottom-left: lumen only -> lumen
    labels[0, 4:, 4:] = 3  # bottom-right: calcified + wall + non-calcified -> non-calcified
    labels[0, 7, 7] = 4
    labels[0, 4, 4] = 1
    assert labels_to_latent(labels, 4).tolist() == [[[1, 1], [2, 4]]]
    assert torch.equal(labels_to_latent(labels, 1), labels)


def test_a_thin_wall_survives_alignment() -> None:
    _, labels = phantom_batch(1, 32)
    latent = labels_to_latent(labels, 4)
    nearest = labels[:, ::4, ::4]
    assert (latent == 1).sum() >= (nearest == 1).sum()
    ring = (labels == 1).view(1, 8, 4, 8, 4).any(4).any(2)
    has_plaque = (labels >= 3).view(1, 8, 4, 8, 4).any(4).any(2)
    assert torch.equal(latent == 1, ring & ~has_plaque)  # every cell the wall touches stays wall unless plaque


def test_labels_to_latent_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="divisible"):
        labels_to_latent(torch.zeros(1, 6, 8, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="0..4"):
        labels_to_latent(torch.full((1, 4, 4), 5), 2)


# sampling ---------------------------------------------------------------------------------------


def cell_embed(labels: torch.Tensor) -> torch.Tensor:
    """Embeddings (B, 2, h, w) whose first channel is the cell's flat index, second its class."""
    b, h, w = labels.shape
    return torch.stack([torch.arange(b * h * w, dtype=torch.float32).view(b, h, w), labels.float()], 1)


def test_sampler_counts_and_replacement() -> None:
    labels = torch.zeros(2, 4, 4, dtype=torch.int64)
    labels.view(-1)[:10] = 1  # 10 wall cells
    labels.view(-1)[20] = 3  # a single calcified cell; no non-calcified
    g = torch.Generator().manual_seed(0)
    feats, targets = sample_hard_classes(cell_embed(labels), labels, [1, 3, 4], 5, g)
    assert feats.shape == (10, 2) and targets.dtype == torch.int64
    assert targets.tolist() == [1] * 5 + [3] * 5
    assert torch.equal(feats[:, 1].long(), targets)  # each vector is a cell of its class
    wall = feats[:5, 0].long()
    assert wall.unique().numel() == 5 and int(wall.max()) < 10  # without replacement
    assert feats[5:, 0].long().tolist() == [20] * 5  # with replacement from one cell
    cells, _ = sample_hard_cells(labels, [1], 20, torch.Generator().manual_seed(0))
    assert cells.numel() == 20 and cells.unique().numel() <= 10  # more than there are: replacement


def test_sampler_absent_classes_and_determinism() -> None:
    labels = torch.ones(1, 4, 4, dtype=torch.int64)
    feats, targets = sample_hard_classes(cell_embed(labels), labels, [3, 4], 8)
    assert feats.shape == (0, 2) and targets.shape == (0,)
    a = sample_hard_cells(labels, [1], 8, torch.Generator().manual_seed(3))[0]
    b = sample_hard_cells(labels, [1], 8, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)
    feats, targets = sample_hard_classes(cell_embed(labels), labels, [1, 3, 4], 8)
    assert targets.unique().tolist() == [1]
    assert float(supcon_loss(F.normalize(feats, dim=1), targets, 0.1)) == 0.0  # single class: no negatives


# supcon -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_supcon_known_value(tau: float) -> None:
    e1, e2 = torch.eye(2, dtype=torch.float64)
    feats = torch.stack([e1, e1, e2, e2])
    # each anchor: one positive at similarity 1, two negatives at 0
    expected = math.log(math.exp(1 / tau) + 2) - 1 / tau
    assert float(supcon_loss(feats, torch.tensor([0, 0, 1, 1]), tau)) == pytest.approx(expected, rel=1e-9)


def test_supcon_prefers_clustered_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(3).repeat_interleave(20)
    feats = F.normalize(torch.eye(8)[targets] + 0.2 * torch.randn(60, 8, generator=g), dim=1)
    shuffled = targets[torch.randperm(60, generator=g)]
    assert float(supcon_loss(feats, targets, 0.1)) < float(supcon_loss(feats, shuffled, 0.1))


def test_supcon_counts_equal_the_expanded_sample_set() -> None:
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(7, 4, generator=g), dim=1).requires_grad_()
    targets = torch.tensor([0, 0, 1, 1, 2, 1, 0])
    counts = torch.tensor([1, 3, 1, 2, 1, 4, 1])
    weighted = supcon_loss(feats, targets, 0.1, counts)
    expanded = supcon_loss(feats.repeat_interleave(counts, 0), targets.repeat_interleave(counts), 0.1)
    torch.testing.assert_close(weighted, expanded)
    (g1,) = torch.autograd.grad(weighted, feats)
    (g2,) = torch.autograd.grad(expanded, feats)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(
    "feats,targets",
    [
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)),  # empty
        (F.normalize(torch.randn(5, 4), dim=1), torch.full((5,), 3)),  # one class
        (F.normalize(torch.randn(1, 4), dim=1), torch.tensor([1])),  # one pixel
        (F.normalize(torch.randn(2, 4), dim=1), torch.tensor([1, 3])),  # no anchor has a positive
    ],
)
def test_supcon_degenerate_batches_give_a_connected_zero(feats: torch.Tensor, targets: torch.Tensor) -> None:
    feats = feats.clone().requires_grad_()
    loss = supcon_loss(feats, targets, 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert feats.grad is not None and not feats.grad.isnan().any()


def test_supcon_is_stable_at_tiny_temperature() -> None:
    feats = F.normalize(torch.randn(12, 4), dim=1).requires_grad_()
    loss = supcon_loss(feats, torch.arange(3).repeat(4), 1e-4)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(feats.grad).all()


# Stage1Loss -------------------------------------------------------------------------------------


def tiny_model() -> VQAutoencoder:
    torch.manual_seed(0)
    return VQAutoencoder(codebook_size=32, latent_dim=8, downsample=4, channels=[16, 32], res_blocks=1, embed_dim=16)


def test_stage1_loss_weights_its_components() -> None:
    cfg = stage1_cfg(l1=2.0, perceptual=3.0, commit=0.5, contrastive=7.0)
    cfg["contrastive"]["samples_per_class"] = 16
    criterion = Stage1Loss(cfg, FakePerceptual())
    x, labels = phantom_batch(4)
    total, parts = criterion(tiny_model()(x), x, labels)
    assert set(parts) == {"l1", "perceptual", "commit", "contrastive", "total"}
    assert all(v > 0 for v in parts.values())
    expected = 2 * parts["l1"] + 3 * parts["perceptual"] + 0.5 * parts["commit"] + 7 * parts["contrastive"]
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    assert parts["total"] == pytest.approx(expected, rel=1e-5)
    assert criterion.backbone == "random"


def test_stage1_loss_contrastive_term_is_supcon_of_the_samples() -> None:
    cfg = stage1_cfg()
    cfg["contrastive"]["samples_per_class"] = 64
    criterion = Stage1Loss(cfg, FakePerceptual())
    x, labels = phantom_batch(2)
    with torch.no_grad():
        out = tiny_model().eval()(x)
    _, parts = criterion(out, x, labels, torch.Generator().manual_seed(5))
    feats, targets = sample_hard_classes(
        out.embed, labels_to_latent(labels, 4), cfg["contrastive"]["hard_classes"], 64, torch.Generator().manual_seed(5)
    )
    assert parts["contrastive"] == pytest.approx(float(supcon_loss(feats, targets, 0.1)), rel=1e-5)


def test_short_training_lowers_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = stage1_cfg()
    cfg["contrastive"]["samples_per_class"] = 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        criterion = Stage1Loss(cfg, Perceptual("alex"))
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    x, labels = phantom_batch(8)
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(30):
        total, parts = criterion(model(x), x, labels, g)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(parts)
    assert all(math.isfinite(p["total"]) for p in history)

    def mean(key: str, steps: slice) -> float:
        return sum(p[key] for p in history[steps]) / 5

    # SupCon cannot fall below log(N − 1) (all positives at similarity 1), so the total drops slowly
    assert mean("total", slice(-5, None)) < 0.95 * mean("total", slice(5))
    assert mean("l1", slice(-5, None)) < 0.5 * mean("l1", slice(5))
    assert mean("contrastive", slice(-5, None)) < mean("contrastive", slice(5))
