"""Read the output of `plaque.data.preprocess`: memory-mapped slice arrays and the manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plaque.classes import NUM_CLASSES
from plaque.errors import InputError

IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
MANIFEST_FILE = "manifest.csv"
SUMMARY_FILE = "summary.json"
PREPROCESS_KEYS = ("window_hu", "crop_px", "step_mm", "size")
MANIFEST_COLUMNS: tuple[str, ...] = (
    "index",
    "patient",
    "split",
    "vessel",
    "slice",
    "spacing_mm",
    "center_x",
    "center_y",
    "center_z",
    *(f"count_{c}" for c in range(NUM_CLASSES)),
)


@dataclass
class Processed:
    """A preprocessed dataset.

    Attributes:
        images: ``(N, H, W)`` float32 memmap in [0, 1].
        labels: ``(N, H, W)`` uint8 memmap, classes 0..4.
        manifest: ``N`` rows (`MANIFEST_COLUMNS`); row ``n`` describes slice ``n``.
        summary: the parsed ``summary.json``.
    """

    images: np.ndarray
    labels: np.ndarray
    manifest: pd.DataFrame
    summary: dict[str, Any]

    def indices(self, split: str) -> np.ndarray:
        """``(n,)`` int64 rows of the arrays that belong to ``split`` (ascending)."""
        return self.manifest.index[self.manifest["split"] == split].to_numpy(dtype=np.int64)

    def preprocess_settings(self) -> dict[str, Any]:
        """How the cross-sections were cut (``window_hu``, ``crop_px``, ``step_mm``, ``size``, from ``summary.json``):
        what a model trained on them needs to cut new scans the same way."""
        missing = [k for k in PREPROCESS_KEYS if k not in self.summary]
        if missing:
            raise InputError(SUMMARY_FILE, f"lacks {', '.join(missing)}; preprocess the data again")
        return {k: self.summary[k] for k in PREPROCESS_KEYS}

    def patients(self, split: str) -> list[str]:
        """Sorted pseudonyms of the patients in ``split``."""
        return sorted(self.manifest.loc[self.manifest["split"] == split, "patient"].unique())


def load_processed(folder: Path) -> Processed:
    """Open a preprocessed folder without reading the arrays into memory.

    Raises:
        InputError: a missing or unreadable file, a missing manifest column, or arrays and manifest
            that disagree (dtype, shape, row count, index column).
    """
    folder = Path(folder)
    for name in (IMAGES_FILE, LABELS_FILE, MANIFEST_FILE, SUMMARY_FILE):
        if not (folder / name).is_file():
            raise InputError(folder / name, "missing; run `python -m plaque.data.preprocess` first")
    images = _open(folder / IMAGES_FILE, np.float32)
    labels = _open(folder / LABELS_FILE, np.uint8)
    if labels.shape != images.shape:
        raise InputError(folder / LABELS_FILE, f"shape {labels.shape} differs from {IMAGES_FILE} {images.shape}")
    try:
        manifest = pd.read_csv(folder / MANIFEST_FILE, dtype={"patient": str, "split": str, "vessel": str})
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(folder, f"unreadable manifest or summary: {e}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise InputError(folder / MANIFEST_FILE, f"missing column(s): {', '.join(missing)}")
    if len(manifest) != len(images):
        raise InputError(folder / MANIFEST_FILE, f"{len(manifest)} rows but the arrays hold {len(images)} slices")
    if not np.array_equal(manifest["index"].to_numpy(), np.arange(len(manifest))):
        raise InputError(folder / MANIFEST_FILE, "column `index` must be 0, 1, 2, ... (the row in the arrays)")
    return Processed(images=images, labels=labels, manifest=manifest, summary=summary)


def _open(path: Path, dtype: type) -> np.ndarray:
    """Memory-map a ``(N, H, W)`` array of ``dtype``."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise InputError(path, f"not a readable .npy array: {e}") from None
    if arr.ndim != 3 or arr.dtype != dtype:
        raise InputError(path, f"expected a 3-D {np.dtype(dtype).name} array, got {arr.ndim}-D {arr.dtype}")
    return arr
