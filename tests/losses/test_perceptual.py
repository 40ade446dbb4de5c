"""LPIPS without network: trunk weights from torchvision's cache, verified by hash; random trunk as a loud fallback."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from plaque.errors import InputError
from plaque.losses import perceptual
from plaque.losses.perceptual import Perceptual, backbone_path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision checkpoint cache under a temporary TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def fake_weights(cache: Path, monkeypatch: pytest.MonkeyPatch, net: str, model: torch.nn.Module) -> Path:
    """Save ``model``'s state_dict as the cached file for ``net``, named with its own SHA-256 prefix."""
    tmp = cache / "weights.pth"
    torch.save(model.state_dict(), tmp)
    stem = perceptual.BACKBONE_FILES[net].rsplit("-", 1)[0]
    path = cache / f"{stem}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    monkeypatch.setitem(perceptual.BACKBONE_FILES, net, path.name)
    return path


def test_missing_weights_fall_back_to_a_random_trunk_loudly(cache: Path) -> None:
    assert backbone_path("alex").parent == cache
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED alex"):
        loss = Perceptual("alex")
    assert loss.backbone == "random"
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.lpips.training  # dropout in the linear layers stays off
    x = torch.rand(2, 1, 32, 32)
    recon = torch.rand(2, 1, 32, 32, requires_grad=True)
    value = loss(recon, x)
    assert value.shape == () and float(value.detach()) > 0
    value.backward()
    assert recon.grad is not None and float(recon.grad.abs().sum()) > 0
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    with pytest.warns(UserWarning):
        again = Perceptual("alex")
    assert torch.equal(again.lpips.net.slice1[0].weight, loss.lpips.net.slice1[0].weight)  # seeded fallback


def test_cached_weights_are_loaded(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    model = torchvision.models.squeezenet1_1(weights=None)
    fake_weights(cache, monkeypatch, "squeeze", model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = Perceptual("squeeze")
    assert loss.backbone == "pretrained"
    assert torch.equal(loss.lpips.net.slice1[0].weight, model.features[0].weight)
    assert torch.equal(getattr(loss.lpips.net.slice7, "12").expand3x3.weight, model.features[12].expand3x3.weight)
    assert loss(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)).shape == ()


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_trunk_keys_map_onto_torchvision_features(net: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trunk = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).net.state_dict()
        features = perceptual._TORCHVISION[net](weights=None).features.state_dict()
    renamed = {k.split(".", 1)[1] for k in trunk}
    assert renamed == set(features)


def test_corrupted_cache_file_is_rejected(cache: Path) -> None:
    (cache / perceptual.BACKBONE_FILES["alex"]).write_bytes(b"truncated download")
    with pytest.raises(InputError, match="SHA-256 .* does not start with 7be5be79"):
        Perceptual("alex")


def test_weights_of_another_network_are_rejected(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_weights(cache, monkeypatch, "alex", torchvision.models.squeezenet1_1(weights=None))
    with pytest.raises(InputError, match="not torchvision alex weights"):
        Perceptual("alex")


def test_unknown_trunk() -> None:
    with pytest.raises(InputError, match="perceptual.net"):
        Perceptual("resnet")
