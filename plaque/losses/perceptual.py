"""LPIPS perceptual distance for single-channel slices, loaded without network access.

The ``lpips`` package ships its calibrated linear layers, but its ImageNet
trunk (torchvision AlexNet / VGG-16 / SqueezeNet 1.1) is normally downloaded.
Here the trunk is read from torchvision's cache,
``torch.hub.get_dir()/checkpoints/<file>`` (file names in ``BACKBONE_FILES``).
The hex digits after the last ``-`` of a file name are the start of its SHA-256;
a cached file whose digest does not start with them, or whose weights do not
fit the architecture, is rejected with an ``InputError``.

The LPIPS module is always built with a randomly initialised trunk (so that
nothing is fetched), then the verified cached weights are loaded into it. When
the file is absent the random trunk stays (seeded, so it is reproducible), a
warning is issued and logged, and ``Perceptual.backbone`` reads ``"random"``
instead of ``"pretrained"``; stages record it with their metrics.

The module is frozen: its parameters never require gradients and it stays in
eval mode (the linear layers carry dropout) even when its parent is trained.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import lpips
import torch
import torch.nn as nn
import torchvision
from torch import Tensor

from plaque.errors import InputError

log = logging.getLogger(__name__)

# torchvision's ImageNet weights that `lpips` uses for each trunk (IMAGENET1K_V1).
BACKBONE_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_TORCHVISION: dict[str, Callable[..., nn.Module]] = {
    "alex": torchvision.models.alexnet,
    "vgg": torchvision.models.vgg16,
    "squeeze": torchvision.models.squeezenet1_1,
}
_HASH = re.compile(r"-([0-9a-f]{6,})\.pth$")
_RANDOM_TRUNK_SEED = 0


def backbone_path(net: str) -> Path:
    """Where torchvision caches the ImageNet weights of the ``net`` trunk (alex | vgg | squeeze)."""
    if net not in BACKBONE_FILES:
        raise InputError("stage1.perceptual.net", f"{net!r} is not one of {sorted(BACKBONE_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def verify_checkpoint(path: Path) -> None:
    """Check that the SHA-256 of ``path`` starts with the hex digits in its name; InputError if not."""
    match = _HASH.search(path.name)
    if match is None:
        raise InputError(path, "file name carries no SHA-256 prefix ('<name>-<hex>.pth')")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise InputError(
            path,
            f"SHA-256 {digest.hexdigest()[:16]}… does not start with {match.group(1)} "
            "(corrupted or wrong file); delete it or replace it with torchvision's file",
        )


def load_trunk_state(net: str, path: Path) -> dict[str, Tensor]:
    """Verified torchvision weights at ``path``, renamed to the keys of ``lpips``' trunk for ``net``.

    ``lpips`` splits torchvision's ``features`` into ``slice<k>`` modules that
    keep the layer indices, so ``features.<i>.<rest>`` becomes ``slice<k>.<i>.<rest>``.
    """
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        reference = _TORCHVISION[net](weights=None)
        reference.load_state_dict(state)
    except Exception as e:  # unreadable file or weights of another architecture
        why = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        raise InputError(path, f"not torchvision {net} weights ({why})") from None
    return {k.removeprefix("features."): v for k, v in reference.state_dict().items() if k.startswith("features.")}


class Perceptual(nn.Module):
    """Frozen LPIPS (v0.1) between reconstructions and targets, (B, 1, H, W) in [0, 1] → scalar batch mean.

    Attributes:
        backbone: ``"pretrained"`` (ImageNet trunk from the cache) or ``"random"`` (fallback).
        net: the trunk name, ``alex`` | ``vgg`` | ``squeeze``.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        path = backbone_path(net)
        self.net = net
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(_RANDOM_TRUNK_SEED)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\..*")
            self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if path.is_file():
            trunk = load_trunk_state(net, path)
            keys = {k: re.sub(r"^slice\d+\.", "", k) for k in self.lpips.net.state_dict()}
            self.lpips.net.load_state_dict({k: trunk[v] for k, v in keys.items()})
            self.backbone = "pretrained"
        else:
            msg = (
                f"LPIPS trunk weights not found at {path}: using a RANDOMLY INITIALISED {net} trunk, so the "
                f"perceptual loss is not the paper's LPIPS. Put torchvision's {path.name} there to fix this."
            )
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
            self.backbone = "random"
        self.requires_grad_(False)
        self.lpips.eval()

    def train(self, mode: bool = True) -> Perceptual:
        """Keep LPIPS in eval mode whatever ``mode`` is (its dropout must stay off)."""
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        """Mean LPIPS over the batch; inputs (B, 1, H, W) in [0, 1], repeated to RGB and scaled to [−1, 1]."""
        a = recon.expand(-1, 3, -1, -1) * 2 - 1
        b = target.expand(-1, 3, -1, -1) * 2 - 1
        return self.lpips(a, b).mean()
