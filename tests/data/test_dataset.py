"""Slice datasets: split isolation, item shapes, and a rotation and shift that keep labels consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from plaque.data.dataset import SliceDataset, transform
from plaque.data.processed import IMAGES_FILE, LABELS_FILE, MANIFEST_COLUMNS, MANIFEST_FILE, SUMMARY_FILE
from plaque.errors import InputError


@pytest.fixture
def processed(tmp_path: Path) -> Path:
    n, s = 6, 16
    rng = np.random.default_rng(0)
    labels = np.zeros((n, s, s), dtype=np.uint8)
    labels[:, 6:10, 6:10] = 2
    labels[1, 6, 6] = 3  # a calcified pixel in one training slice
    np.save(tmp_path / IMAGES_FILE, rng.uniform(0, 1, (n, s, s)).astype(np.float32))
    np.save(tmp_path / LABELS_FILE, labels)
    rows = []
    for i, split in enumerate(["train", "train", "train", "val", "test", "test"]):
        counts = np.bincount(labels[i].ravel(), minlength=5)
        rows.append([i, f"P{i // 2}", split, "LAD", i, 0.4, 0.0, 0.0, 0.0, *counts])
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(tmp_path / MANIFEST_FILE, index=False)
    (tmp_path / SUMMARY_FILE).write_text("{}")
    return tmp_path


def test_items_and_split_isolation(processed: Path) -> None:
    train, val = SliceDataset(processed, "train"), SliceDataset(processed, "val")
    assert len(train) == 3 and len(val) == 1
    image, labels = train[0]
    assert image.shape == (1, 16, 16) and image.dtype == torch.float32
    assert labels.shape == (16, 16) and labels.dtype == torch.int64
    plaque = [bool((train[i][1] >= 3).any()) for i in range(len(train))]
    assert train.has_plaque.tolist() == plaque and 0 < sum(plaque) < len(train), "marks the slices with plaque"
    with pytest.raises(InputError, match="test slices are for the evaluator alone"):
        SliceDataset(processed, "test")


def test_rotation_by_90_degrees_is_exact_and_labels_follow_the_image() -> None:
    image = torch.zeros(1, 8, 8)
    image[0, 1, 2] = 1.0
    labels = (image[0] > 0).long() * 3
    rot_img, rot_lab = transform(image, labels, 90.0)
    assert torch.allclose(rot_img, torch.rot90(image, k=1, dims=(1, 2)), atol=1e-5)  # (1, 2) -> (5, 1)
    assert torch.equal(rot_lab, (rot_img[0] > 0.5).long() * 3)
    assert set(rot_lab.unique().tolist()) <= {0, 3}


def test_augmentation_is_reproducible_from_the_torch_seed(processed: Path) -> None:
    data = SliceDataset(processed, "train", rotation_p=1.0, rotation_max_deg=30.0)
    torch.manual_seed(5)
    first = data[0]
    torch.manual_seed(5)
    again = data[0]
    plain = SliceDataset(processed, "train")[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], plain[0])


def test_a_whole_pixel_shift_moves_image_and_labels_exactly() -> None:
    image = torch.zeros(1, 8, 8)
    image[0, 3, 3] = 1.0
    labels = (image[0] > 0).long() * 3
    moved, moved_lab = transform(image, labels, 0.0, (1.0, 2.0))
    assert torch.allclose(moved, torch.roll(image, shifts=(1, 2), dims=(1, 2)), atol=1e-5)  # (3, 3) -> (4, 5)
    assert torch.equal(moved_lab, torch.roll(labels, shifts=(1, 2), dims=(0, 1)))
    edge, edge_lab = transform(image, labels, 0.0, (0.0, 6.0))  # moved out: the fill and background come in
    assert float(edge.max()) == 0.0 and int(edge_lab.max()) == 0


def test_a_shift_follows_the_rotation_in_the_output_frame() -> None:
    image = torch.zeros(1, 8, 8)
    image[0, 1, 2] = 1.0
    labels = (image[0] > 0).long() * 3
    moved, moved_lab = transform(image, labels, 90.0, (1.0, 2.0))
    expected = torch.roll(torch.rot90(image, k=1, dims=(1, 2)), shifts=(1, 2), dims=(1, 2))
    assert torch.allclose(moved, expected, atol=1e-5)
    assert torch.equal(moved_lab, (expected[0] > 0.5).long() * 3)


def test_the_shift_is_whole_pixels_bounded_in_millimetres(processed: Path) -> None:
    plain = SliceDataset(processed, "train")
    shifted = SliceDataset(processed, "train", shift_mm=0.8)  # the fixture's pixels are 0.4 mm: at most 2 px
    image, lumen = plain[0][0], plain[0][1] == 2
    torch.manual_seed(0)
    offsets = []
    for _ in range(60):
        moved, labels = shifted[0]
        rows, cols = torch.nonzero(labels == 2, as_tuple=True)
        offset = (int(rows.min()) - 6, int(cols.min()) - 6)  # the fixture's lumen starts at (6, 6)
        offsets.append(offset)
        assert torch.equal(labels == 2, torch.roll(lumen, shifts=offset, dims=(0, 1)))
        inner = torch.roll(image, shifts=offset, dims=(1, 2))[:, 2:-2, 2:-2]
        assert torch.allclose(moved[:, 2:-2, 2:-2], inner, atol=1e-6), "whole pixels: values copied, not blurred"
    found = torch.tensor(offsets)
    assert int(found.abs().max()) == 2, "reaches shift_mm / spacing_mm pixels and no farther"
    assert len(set(offsets)) > 8, "both axes vary"


def test_without_a_shift_the_rotation_draws_what_it_drew_before(processed: Path) -> None:
    """shift_mm 0 consumes no random numbers: runs trained before the shift existed replay the same draws."""
    data = SliceDataset(processed, "train", rotation_p=1.0, rotation_max_deg=30.0)
    torch.manual_seed(5)
    image, labels = data[0]
    after = torch.get_rng_state()
    torch.manual_seed(5)
    _ = float(torch.rand(()))  # the coin
    angle = (2 * float(torch.rand(())) - 1) * 30.0
    assert torch.equal(torch.get_rng_state(), after)
    expected = transform(*SliceDataset(processed, "train")[0], angle)
    assert torch.equal(image, expected[0]) and torch.equal(labels, expected[1])
