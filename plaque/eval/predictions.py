"""Saved test predictions of one method, checked against the test split they claim to cover.

Layout (written by the inference layer for every method, `plaque.inference.write_predictions`)::

    PRED/<method>/<patient>.npz    pred  (N, H, W) uint8 class ids
                                   index (N,) int64, the manifest rows of the patient's test slices, in order

A method folder must hold exactly the test patients of the processed dataset: a missing patient,
an unknown one, rows that are not the patient's test rows, a wrong shape or a class id out of
range is an `InputError` naming the method and the patient (the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plaque.classes import NUM_CLASSES
from plaque.data.processed import Processed
from plaque.errors import InputError

SUFFIX = ".npz"


def method_folders(pred_root: Path) -> dict[str, Path]:
    """Method name → folder: the sub-folders of ``pred_root`` that hold ``*.npz``, or ``pred_root`` itself
    (named after it) when it holds them directly.

    Raises:
        InputError: ``pred_root`` missing, or no folder with predictions in it.
    """
    pred_root = Path(pred_root)
    if not pred_root.is_dir():
        raise InputError(pred_root, "predictions folder not found")
    if any(pred_root.glob(f"*{SUFFIX}")):
        return {pred_root.name: pred_root}
    found = {d.name: d for d in sorted(pred_root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    empty = [name for name, d in found.items() if not any(d.glob(f"*{SUFFIX}"))]
    if empty:
        raise InputError(pred_root / empty[0], f"method {empty[0]!r} has no predictions (*{SUFFIX})")
    if not found:
        raise InputError(pred_root, f"no method folders with predictions (*{SUFFIX})")
    return found


def test_rows(processed: Processed) -> dict[str, np.ndarray]:
    """Patient → ``(N,)`` int64 manifest rows of its test slices, in manifest order."""
    manifest = processed.manifest
    test = manifest[manifest["split"] == "test"]
    if test.empty:
        raise InputError("data", "the processed dataset has no test slices")
    return {p: rows.to_numpy(dtype=np.int64) for p, rows in test.groupby("patient", sort=True).groups.items()}


def load_method(folder: Path, method: str, processed: Processed) -> dict[str, np.ndarray]:
    """Patient → ``(N, H, W)`` uint8 predicted class ids of one method, every test patient, checked.

    Raises:
        InputError: see the module docstring; the message names the method and the file.
    """
    folder = Path(folder)
    rows = test_rows(processed)
    files = {f.stem: f for f in sorted(folder.glob(f"*{SUFFIX}"))}
    unknown = sorted(set(files) - set(rows))
    if unknown:
        raise InputError(files[unknown[0]], f"method {method}: patient {unknown[0]} is not a test patient of the data")
    preds: dict[str, np.ndarray] = {}
    for patient, expected in rows.items():
        path = folder / f"{patient}{SUFFIX}"
        if patient not in files:
            raise InputError(path, f"method {method}: no prediction for test patient {patient}")
        preds[patient] = _read(path, method, patient, expected, processed.labels.shape[1:])
    return preds


def _read(path: Path, method: str, patient: str, expected: np.ndarray, slice_shape: tuple[int, ...]) -> np.ndarray:
    where = f"method {method}, patient {patient}"
    try:
        with np.load(path, allow_pickle=False) as f:
            if "pred" not in f or "index" not in f:
                raise InputError(path, f"{where}: needs arrays 'pred' and 'index', has {sorted(f.files)}")
            pred, index = f["pred"], f["index"]
    except (OSError, ValueError) as e:
        raise InputError(path, f"{where}: unreadable ({e})") from None
    if index.shape != expected.shape or not np.array_equal(index, expected):
        raise InputError(path, f"{where}: 'index' does not list the patient's {len(expected)} test rows in order")
    want = (len(expected), *slice_shape)
    if pred.shape != want:
        raise InputError(path, f"{where}: 'pred' has shape {pred.shape}, expected {want}")
    if not np.issubdtype(pred.dtype, np.integer):
        raise InputError(path, f"{where}: 'pred' must hold integer class ids, got {pred.dtype}")
    lo, hi = int(pred.min()), int(pred.max())
    if lo < 0 or hi >= NUM_CLASSES:
        raise InputError(path, f"{where}: class id {lo if lo < 0 else hi} outside 0..{NUM_CLASSES - 1}")
    return pred.astype(np.uint8)
