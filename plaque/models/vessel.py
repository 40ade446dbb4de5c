"""The vessel model: a small 3D U-Net (MONAI) that finds the coronary vessels in a whole scan.

It is not part of the paper. It lets `plaque.segment` cut cross-sections along vessels of a scan that
comes without a centerline: its mask is skeletonised into centerlines (`plaque.data.centerlines`).
Input and grid: `plaque.data.vessel`. Choice of network and its measurement: docs/vessel-model.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from scipy import ndimage
from torch import nn

from plaque.checkpoint import load_checkpoint, load_state_strictly
from plaque.data.vessel import to_grid
from plaque.errors import InputError
from plaque.precision import autocast, device_autocast

KIND = "vessel"  # the ``kind`` of a vessel model's checkpoint
WINDOW_OVERLAP = 0.25  # overlap of the sliding windows at inference
# the settings a checkpoint must hold to rebuild its network and make a mask (`predict_vessel`)
RECORD_SETTINGS = ("spacing_mm", "channels", "res_units", "patch", "threshold", "min_piece_fraction")
_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)  # pieces are 26-connected, as the skeleton's graph is


def build_vessel_net(channels: Sequence[int], res_units: int) -> nn.Module:
    """A 3D U-Net: ``(B, 1, D, H, W)`` windowed scan -> ``(B, 2, D, H, W)`` logits (background, vessel).

    Its weights, and so its activations, are laid out channels-last (``torch.channels_last_3d``): the same
    network, with a bf16 training step 1.6x faster on an AVX512-BF16 CPU than in the default layout
    (docs/vessel-model.md).

    Args:
        channels: widths per resolution; the grid halves between them (``D, H, W`` of a training patch must
            be divisible by ``2 ** (len(channels) - 1)``).
        res_units: residual units per block (MONAI ``num_res_units``).
    """
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=tuple(int(c) for c in channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=int(res_units),
    ).to(memory_format=torch.channels_last_3d)


@torch.no_grad()
def vessel_probability(net: nn.Module, image: np.ndarray, patch: int, device: torch.device) -> np.ndarray:
    """``(Z', Y', X')`` float32 probability of the vessel for a windowed scan ``image`` ``(Z', Y', X')`` on the
    model's grid, by overlapping ``patch``³ windows (edges padded). Under a GPU's automatic precision; in
    float32 on the CPU, where bf16 would save 0.15 s a scan (0.21 against 0.36 s on 2 cores of an AVX512-BF16
    CPU) but moved the hardest of the demo's 32 validation vessels below the found threshold (its derived
    centerline's overlap 0.58 in float32, 0.50 in bf16)."""
    net.eval()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    with device_autocast(device) if device.type == "cuda" else autocast(device, "fp32"):
        logits = sliding_window_inference(x, (patch,) * 3, sw_batch_size=1, predictor=net, overlap=WINDOW_OVERLAP)
    return torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy()


def predict_vessel(
    net: nn.Module, image: np.ndarray, shape: tuple[int, int, int], settings: dict[str, Any], device: torch.device
) -> np.ndarray:
    """``shape`` bool: the vessel on a scan's own grid, from its windowed image ``(Z', Y', X')`` on the model's
    grid (`plaque.data.vessel.scan_on_grid`): the probability resampled back, thresholded at
    ``settings["threshold"]``, its enclosed holes filled (a vessel is solid; a hole of a few voxels would
    make a loop of its skeleton), and its small stray pieces dropped (`keep_large_pieces` with
    ``settings["min_piece_fraction"]``)."""
    probability = vessel_probability(net, image, int(settings["patch"]), device)
    mask = ndimage.binary_fill_holes(to_grid(probability, shape, linear=True) >= float(settings["threshold"]))
    return keep_large_pieces(mask, float(settings["min_piece_fraction"]))


def keep_large_pieces(mask: np.ndarray, fraction: float) -> np.ndarray:
    """``mask`` ``(Z, Y, X)`` bool with every connected piece (26-connected) of fewer than ``fraction`` times the
    voxels of its largest piece removed; ``fraction`` 0 keeps every piece.

    A whole scan holds two coronary trees of comparable size, so the rule is relative to the largest piece
    rather than a count of pieces; the stray pieces it removes are bits of other contrast-filled structures
    that would otherwise become trees of their own (docs/vessel-model.md).
    """
    pieces, count = ndimage.label(mask, structure=_NEIGHBOURS)
    if count < 2 or fraction <= 0.0:
        return mask
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0  # the background is no piece: with ``fraction`` > 0 it is never kept
    return (sizes >= fraction * sizes.max())[pieces]


def vessel_record(
    state: dict[str, torch.Tensor], vessel: dict[str, Any], window_hu: Sequence[float], **more: Any
) -> dict[str, Any]:
    """What a vessel model's ``best.pt`` holds, so that it works on its own: the weights, its ``vessel``
    settings (grid, widths, patch, threshold), the HU window of its input, and ``more`` (its validation)."""
    return {"kind": KIND, "model": state, "vessel": dict(vessel), "window_hu": [float(w) for w in window_hu], **more}


def load_vessel_model(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a vessel model's ``best.pt`` on ``device``, and its record (`vessel_record`).

    Raises:
        InputError: the file is missing, unreadable, or not a vessel model.
    """
    record = load_checkpoint(path, map_location="cpu")
    if record.get("kind") != KIND or not isinstance(record.get("vessel"), dict):
        raise InputError(path, "is not a vessel model (train one with `dvc repro vessel`)")
    settings = record["vessel"]
    missing = [k for k in RECORD_SETTINGS if k not in settings]
    if missing:
        raise InputError(
            path,
            f"vessel model without the setting(s) {', '.join(missing)}: made by an older version; retrain it"
            " (`dvc repro vessel`)",
        )
    net = build_vessel_net(settings["channels"], settings["res_units"])
    load_state_strictly(net, record["model"], Path(path), "a vessel model's best.pt")
    return net.to(device).eval(), record
