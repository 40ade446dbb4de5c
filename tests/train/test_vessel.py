"""The vessel model trains on a synthetic tube, deterministically, and its checkpoint works on its own."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from plaque.checkpoint import save_atomic
from plaque.data.vessel import VesselCase
from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.models.vessel import (
    build_vessel_net,
    keep_large_pieces,
    load_vessel_model,
    predict_vessel,
    vessel_record,
)
from plaque.train.vessel import summarise, train_vessel_net

SETTINGS = {
    "spacing_mm": 0.5,
    "channels": [4, 8],
    "res_units": 1,
    "patch": 16,
    "batch_size": 4,
    "steps": 80,
    "lr": 1.0e-2,
    "weight_decay": 0.0,
    "on_vessel": 0.5,
    "threshold": 0.5,
    "min_piece_fraction": 0.125,
    "seed": 0,
}


def tube_case(seed: int) -> VesselCase:
    """A bright tube of radius 2.5 voxels along x in noise, with a dimmer, thinner decoy beside it (not vessel)."""
    rng = np.random.default_rng(seed)
    z, y = np.mgrid[:24, :24][0][..., None], np.mgrid[:24, :24][1][..., None]
    y0 = 8 + seed % 3
    tube = ((z - 12) ** 2 + (y - y0) ** 2 <= 2.5**2) & np.ones((1, 1, 24), bool)
    decoy = ((z - 12) ** 2 + (y - 19) ** 2 <= 1.2**2) & np.ones((1, 1, 24), bool)
    image = (0.2 + 0.03 * rng.standard_normal((24, 24, 24)) + 0.5 * tube + 0.2 * decoy).astype(np.float32)
    mask = tube.astype(np.uint8)
    return VesselCase(f"P{seed}", image, mask, mask, Geometry.axial((24, 24, 24), np.zeros(3), (0.5, 0.5, 0.5)))


def test_a_short_training_finds_the_tube_and_not_the_decoy() -> None:
    torch.set_num_threads(1)
    net = train_vessel_net([tube_case(s) for s in range(3)], SETTINGS, torch.device("cpu"), "fp32")
    held_out = tube_case(4)
    mask = predict_vessel(net, held_out.image, held_out.mask.shape, SETTINGS, torch.device("cpu"))
    truth = held_out.mask.astype(bool)
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) >= 0.9
    assert not mask[:, 17:, :].any()  # the decoy


def test_two_trainings_with_one_seed_give_equal_weights() -> None:
    torch.set_num_threads(1)
    short = {**SETTINGS, "steps": 3}
    a, b = (train_vessel_net([tube_case(0)], short, torch.device("cpu"), "fp32").state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train_vessel_net([tube_case(0)], {**short, "seed": 1}, torch.device("cpu"), "fp32").state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_network_is_channels_last_and_computes_what_the_default_layout_computes() -> None:
    torch.manual_seed(0)
    net = build_vessel_net([4, 8], 1).double().eval()
    kernels = [p for p in net.parameters() if p.dim() == 5]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    assert all(p.is_contiguous() for p in plain.parameters())
    x = torch.randn(2, 1, 16, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), rtol=1e-10, atol=1e-12)


def test_no_training_patient_is_one_line() -> None:
    with pytest.raises(InputError, match="no training patient"):
        train_vessel_net([], SETTINGS, torch.device("cpu"), "fp32")


def test_the_checkpoint_rebuilds_the_same_network_and_refuses_other_files(tmp_path: Path) -> None:
    net = train_vessel_net([tube_case(0)], {**SETTINGS, "steps": 2}, torch.device("cpu"), "fp32")
    path = tmp_path / "best.pt"
    save_atomic(vessel_record(net.state_dict(), SETTINGS, (-300.0, 1300.0)), path)
    loaded, record = load_vessel_model(path, torch.device("cpu"))
    x = torch.from_numpy(tube_case(1).image)[None, None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    assert record["window_hu"] == [-300.0, 1300.0] and record["vessel"]["channels"] == [4, 8]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in loaded.parameters() if p.dim() == 5)
    other = tmp_path / "other.pt"
    save_atomic({"method": "ours", "model": {}}, other)
    with pytest.raises(InputError, match="not a vessel model"):
        load_vessel_model(other, torch.device("cpu"))


def test_pieces_under_the_share_of_the_largest_are_dropped_and_diagonal_neighbours_are_one_piece() -> None:
    mask = np.zeros((12, 12, 12), bool)
    mask[1:9, 1, 1] = True  # the largest piece: 8 voxels
    mask[1:3, 5, 5] = True  # 2 voxels: a quarter of it
    mask[10, 10, 10] = True  # 1 voxel, joined to the next only corner to corner: one piece of 2
    mask[11, 11, 11] = True
    mask[5, 10, 1] = True  # 1 voxel alone: an eighth
    kept = keep_large_pieces(mask, 0.25)
    assert kept[1:9, 1, 1].all() and kept[1:3, 5, 5].all() and kept[10, 10, 10] and kept[11, 11, 11]
    assert not kept[5, 10, 1] and kept.sum() == mask.sum() - 1
    assert keep_large_pieces(mask, 0.3).sum() == 8
    assert (keep_large_pieces(mask, 0.0) == mask).all() and (keep_large_pieces(mask, 1.0).sum() == 8)
    assert not keep_large_pieces(np.zeros((4, 4, 4), bool), 0.5).any()


def test_summary_counts_vessels_not_found_and_averages_dice_per_patient() -> None:
    rows = pd.DataFrame(
        {
            "patient": ["a", "a", "b", "b"],
            "vessel": ["LAD", "RCA", "LAD", "RCA"],
            "dice": [0.9, 0.9, 0.5, 0.5],
            "seconds": [1.0, 1.0, 3.0, 3.0],
            "overlap": [1.0, 0.0, 0.8, 0.2],
            "mean_mm": [0.2, np.nan, 0.4, 9.0],
            "stray_mm": [0.0, 0.0, 25.0, 25.0],
        }
    )
    summary = summarise(rows)
    assert summary["vessel_dice"] == pytest.approx(0.7) and summary["val_patients"] == 2
    assert summary["centerline_found"] == pytest.approx(2 / 4) and summary["centerline_overlap"] == pytest.approx(0.5)
    assert summary["centerline_mean_mm"] == pytest.approx(0.3) and summary["seconds_per_scan"] == pytest.approx(2.0)
    assert summary["stray_mm"] == pytest.approx(25.0) and summary["stray_patients"] == 1
