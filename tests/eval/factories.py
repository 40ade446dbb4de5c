"""A tiny processed dataset and saved predictions, in the layouts preprocessing and the prediction step write."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from plaque.classes import CALCIFIED, LUMEN, NONCALCIFIED, NUM_CLASSES, WALL
from plaque.data.processed import IMAGES_FILE, LABELS_FILE, MANIFEST_COLUMNS, MANIFEST_FILE, SUMMARY_FILE

SIZE = 16
STEP_MM = 0.5
WINDOW_HU = [-300.0, 1300.0]
# (patient, split, slices) in manifest order. The train patient sits between two test patients, so a
# test patient's rows are not simply the ones after the previous test patient's. P03 has no
# non-calcified plaque at all (the empty rule applies to it for that class).
LAYOUT: tuple[tuple[str, str, int], ...] = (
    ("P01", "test", 3),
    ("P00", "train", 2),
    ("P02", "test", 4),
    ("P03", "test", 2),
)
TEST_PATIENTS: tuple[str, ...] = ("P01", "P02", "P03")
NO_NONCALCIFIED = ("P03",)


def slice_labels(rng: np.random.Generator, with_noncalcified: bool, size: int = SIZE) -> np.ndarray:
    """``(size, size)`` uint8: a vessel wall ring around a lumen, a calcified and (optionally) a
    non-calcified spot in the wall; centre and radii vary with ``rng``."""
    cy, cx = rng.uniform(6.5, 8.5, size=2)
    r_out, r_in = rng.uniform(4.5, 5.5), rng.uniform(2.0, 2.8)
    yy, xx = np.mgrid[:size, :size]
    dist = np.hypot(yy - cy, xx - cx)
    labels = np.zeros((size, size), np.uint8)
    labels[dist < r_out] = WALL
    labels[dist < r_in] = LUMEN
    wall = labels == WALL
    labels[wall & (yy < cy - r_in) & (np.abs(xx - cx) < 1.5)] = CALCIFIED
    if with_noncalcified:
        labels[wall & (yy > cy + r_in) & (np.abs(xx - cx) < 1.5)] = NONCALCIFIED
    return labels


def write_processed(
    folder: Path, layout: Sequence[tuple[str, str, int]] = LAYOUT, seed: int = 0, size: int = SIZE
) -> Path:
    """Write ``images.npy``, ``labels.npy``, ``manifest.csv`` and ``summary.json`` of ``layout`` into ``folder``.

    Slices get a per-slice pixel spacing of 0.40, 0.45 or 0.50 mm; ``summary.json`` holds the cross-section
    settings (``window_hu``, ``crop_px``, ``step_mm``, ``size``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels, rows = [], []
    for patient, split, n in layout:
        for k in range(n):
            lab = slice_labels(rng, patient not in NO_NONCALCIFIED, size)
            index = len(labels)
            labels.append(lab)
            counts = np.bincount(lab.ravel(), minlength=NUM_CLASSES)
            rows.append(
                {
                    "index": index,
                    "patient": patient,
                    "split": split,
                    "vessel": "LAD",
                    "slice": k,
                    "spacing_mm": 0.40 + 0.05 * (index % 3),
                    "center_x": 1.0 * k,
                    "center_y": 2.0,
                    "center_z": 3.0,
                    **{f"count_{c}": int(counts[c]) for c in range(NUM_CLASSES)},
                }
            )
    lab = np.stack(labels).astype(np.uint8)
    images = (lab / (NUM_CLASSES - 1) * 0.8 + rng.uniform(0.0, 0.2, lab.shape)).astype(np.float32)
    np.save(folder / IMAGES_FILE, images)
    np.save(folder / LABELS_FILE, lab)
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(folder / MANIFEST_FILE, index=False)
    (folder / SUMMARY_FILE).write_text(
        json.dumps({"window_hu": WINDOW_HU, "crop_px": size, "step_mm": STEP_MM, "size": size})
    )
    return folder


def truth_by_patient(processed: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Patient → ``(rows (N,) int64, labels (N, H, W) uint8)`` of its test slices, in manifest order."""
    manifest = pd.read_csv(Path(processed) / MANIFEST_FILE, dtype={"patient": str})
    labels = np.load(Path(processed) / LABELS_FILE)
    test = manifest[manifest["split"] == "test"]
    out = {}
    for patient, group in test.groupby("patient", sort=True):
        rows = group["index"].to_numpy(dtype=np.int64)
        out[str(patient)] = (rows, labels[rows])
    return out


def degrade(labels: np.ndarray) -> np.ndarray:
    """A worse prediction: every slice shifted two pixels sideways, calcified plaque called non-calcified."""
    out = np.roll(labels, 2, axis=-1)
    out[out == CALCIFIED] = NONCALCIFIED
    return out


def write_predictions(
    folder: Path, processed: Path, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> Path:
    """One ``<patient>.npz`` (``pred`` uint8, ``index`` int64) per test patient of ``processed``: the ground
    truth, or ``transform`` of it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for patient, (rows, labels) in truth_by_patient(processed).items():
        pred = labels if transform is None else transform(labels)
        np.savez(folder / f"{patient}.npz", pred=pred.astype(np.uint8), index=rows)
    return folder
