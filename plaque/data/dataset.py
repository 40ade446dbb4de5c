"""PyTorch datasets over `data/processed`, with the paper's augmentation (random rotation, p = 0.5) and a random
shift of the cross-section's centre (the centerline's error: docs/training.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from plaque.classes import PLAQUE_CLASSES
from plaque.data.processed import load_processed
from plaque.errors import InputError

TRAINING_SPLITS = ("train", "val")


def transform(
    image: torch.Tensor, labels: torch.Tensor, degrees: float, shift_px: tuple[float, float] = (0.0, 0.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate a slice about its centre by ``degrees``, then move its content by ``shift_px`` (rows, columns) pixels,
    in one resampling: bilinear image ``(1, H, W)``, nearest labels ``(H, W)``. Without rotation a whole-pixel
    shift copies pixel values (to float rounding: every sample falls on a pixel centre).

    Pixels moved in from outside the slice get the image's minimum and label 0 (background).
    """
    a = math.radians(degrees)
    rows, cols = image.shape[-2:]
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    # affine_grid maps an output point p to the input point rot @ p + t ([-1, 1] units, x: columns, y: rows); the
    # content lands shifted by s in the output when t = -rot @ s
    s = torch.tensor([2.0 * shift_px[1] / cols, 2.0 * shift_px[0] / rows], dtype=torch.float64)
    theta = torch.cat([rot, (-rot @ s)[:, None]], dim=1).to(image.dtype)
    grid = F.affine_grid(theta[None], [1, 1, rows, cols], align_corners=False)
    fill = image.min()
    moved = F.grid_sample(image[None] - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    lab = F.grid_sample(
        labels[None, None].to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    return moved + fill, lab.round().to(labels.dtype)


class SliceDataset(Dataset):
    """The slices of one split.

    Items are ``(image (1, H, W) float32 in [0, 1], labels (H, W) int64)``; ``has_plaque`` (len,) marks
    the items with calcified or non-calcified pixels (from the manifest's counts). With ``rotation_p > 0``
    each item is rotated by a uniform angle in ``[-rotation_max_deg, rotation_max_deg]`` with
    probability ``rotation_p``; with ``shift_mm > 0`` every item's content then moves by an offset drawn
    uniformly in ``[-shift_mm, shift_mm]`` mm along each axis and rounded to whole pixels of its manifest
    ``spacing_mm``, as a centerline that misses the vessel's centre by that much would cut it. Whole pixels keep
    an item that is not rotated unblurred, like the validation and test slices. Both are drawn from torch's
    global generator (so a checkpointed RNG state reproduces the augmentation).

    Args:
        folder: a `plaque.data.preprocess` output folder.
        split: ``"train"`` or ``"val"``; training code never opens the test split.
        rotation_p: probability of a random rotation (the paper's 0.5 for training, 0 for validation).
        rotation_max_deg: largest rotation angle.
        shift_mm: largest offset of the centre along each axis, mm (0: none; rounded to whole pixels).
        stride: keep every ``stride``-th cross-section along each vessel (those whose ``slice`` index is a
            multiple of it); 1 keeps all. Neighbouring cross-sections (``preprocess.step_mm`` apart) are
            nearly the same image, so a stride cuts the cost of a validation pass with little loss.
    """

    def __init__(
        self,
        folder: Path,
        split: str,
        rotation_p: float = 0.0,
        rotation_max_deg: float = 0.0,
        shift_mm: float = 0.0,
        stride: int = 1,
    ) -> None:
        if split not in TRAINING_SPLITS:
            raise InputError(
                "split",
                f"{split!r}: training code may only read {list(TRAINING_SPLITS)}; "
                "test slices are for the evaluator alone",
            )
        if stride < 1:
            raise InputError("stride", f"expected a positive integer, got {stride!r}")
        data = load_processed(folder)
        rows = data.indices(split)
        self.rows = rows[data.manifest["slice"].to_numpy()[rows] % stride == 0]
        if len(self.rows) == 0:
            raise InputError(folder, f"no slices in split {split!r}")
        self.images, self.labels = data.images, data.labels
        counts = data.manifest.loc[self.rows, [f"count_{c}" for c in PLAQUE_CLASSES]].to_numpy()
        self.has_plaque: np.ndarray = counts.sum(axis=1) > 0  # (len,) bool: calcified or non-calcified present
        self.spacing_mm: np.ndarray = data.manifest["spacing_mm"].to_numpy()[self.rows]  # (len,) pixel size
        self.rotation_p, self.rotation_max_deg, self.shift_mm = rotation_p, rotation_max_deg, shift_mm

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[i])
        image = torch.from_numpy(np.array(self.images[row], dtype=np.float32))[None]
        labels = torch.from_numpy(np.array(self.labels[row], dtype=np.int64))
        angle = 0.0
        if self.rotation_p > 0 and float(torch.rand(())) < self.rotation_p:
            angle = (2 * float(torch.rand(())) - 1) * self.rotation_max_deg
        shift = (0.0, 0.0)
        if self.shift_mm > 0:
            d_row, d_col = torch.round((2 * torch.rand(2) - 1) * self.shift_mm / float(self.spacing_mm[i])).tolist()
            shift = (d_row, d_col)
        if angle or shift != (0.0, 0.0):
            image, labels = transform(image, labels, angle, shift)
        return image, labels
