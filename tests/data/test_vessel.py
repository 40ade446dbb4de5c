"""The vessel model's data: the isotropic grid, its round trip, the splits and the training crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plaque.data.processed import MANIFEST_FILE
from plaque.data.vessel import VesselCase, grid_shape, patient_splits, sample_patch, scan_on_grid, to_grid
from plaque.io.geometry import Geometry


def test_grid_shape_covers_the_field_of_view_at_the_model_spacing() -> None:
    geometry = Geometry.axial((10, 20, 30), np.zeros(3), (1.0, 0.5, 0.25))
    assert grid_shape(geometry, 0.5) == (20, 20, 15)
    assert scan_on_grid(np.full((10, 20, 30), 2000.0), geometry, (-300.0, 1300.0), 0.5).shape == (20, 20, 15)


def test_a_mask_taken_to_a_finer_grid_and_back_lands_on_its_own_voxels() -> None:
    mask = (np.random.default_rng(0).random((6, 8, 10)) > 0.7).astype(np.uint8)
    up = to_grid(mask, (12, 16, 30), linear=False)
    assert up.dtype == np.uint8 and up.sum() == mask.sum() * 2 * 2 * 3
    np.testing.assert_array_equal(to_grid(up, mask.shape, linear=False), mask)


def test_linear_resampling_keeps_a_constant_and_the_range() -> None:
    image = np.random.default_rng(1).random((5, 7, 9)).astype(np.float32)
    out = to_grid(image, (9, 11, 4), linear=True)
    assert out.dtype == np.float32 and image.min() <= out.min() and out.max() <= image.max()
    np.testing.assert_allclose(to_grid(np.full((5, 7, 9), 0.25, np.float32), (3, 3, 3), linear=True), 0.25)


def test_patient_splits_map_follow_up_scans_to_their_subject(tmp_path: Path) -> None:
    pd.DataFrame(
        {"patient": ["Pa1-1", "Pa1-1", "Pa1-2", "Pb2"], "split": ["train", "train", "train", "val"], "index": range(4)}
    ).to_csv(tmp_path / MANIFEST_FILE, index=False)
    assert patient_splits(tmp_path) == {"Pa1": "train", "Pb2": "val"}


def test_a_crop_on_the_vessel_is_centred_on_it_and_zero_padded_off_the_grid() -> None:
    image = np.full((10, 10, 10), 0.5, np.float32)
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[0, 9, 4] = 1
    case = VesselCase("P", image, mask, mask, Geometry.axial((10, 10, 10), np.zeros(3), (0.5, 0.5, 0.5)))
    crop, target = sample_patch(case, 8, True, np.random.default_rng(0))
    assert crop.shape == target.shape == (8, 8, 8)
    assert target[4, 4, 4] == 1 and target.sum() == 1
    assert (crop[:4] == 0).all() and (crop[:, 5:] == 0).all() and (crop[4:, :5] == 0.5).all()
    anywhere, _ = sample_patch(case, 8, False, np.random.default_rng(1))
    assert anywhere.shape == (8, 8, 8) and np.isin(anywhere, [0.0, 0.5]).all()
