"""Inference: the one way every trained method predicts cross-sections, and the one writer of prediction files.

A `Predictor` is what a method's self-contained ``best.pt`` becomes (`load_predictor`, through the
registry's ``predictor`` entry, `plaque.methods`): it maps the cross-sections of one vessel ``(N, s, s)``
float32 in [0, 1], as `plaque.data.preprocess` cuts them along the centerline, with their pixel spacing,
to class maps ``(N, s, s)`` uint8, and carries the cross-section settings it was trained on
(``preprocess``: ``window_hu``, ``crop_px``, ``step_mm``, ``size``), so that new scans are cut the same way. Our Stage-2 networks predict through
`segmenter_predictor`; nnU-Net through `plaque.baselines.nnunet.predictor`.

Prediction files: ``OUT/<patient>.npz`` with ``pred`` (N, s, s) uint8 class ids and ``index`` (N,) int64,
the rows of the processed dataset they predict, in manifest order (`predict_split`, `write_predictions`).
The Stage-2 trainer, nnU-Net's runner, ``python -m plaque.predict`` and ``python -m plaque.segment`` all
write them here; the evaluator only reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from plaque.atomic import atomic_folder
from plaque.checkpoint import load_checkpoint, save_atomic
from plaque.data.processed import Processed
from plaque.errors import InputError
from plaque.methods import get_method, import_object
from plaque.postprocess import PlaqueFloor, VesselPrediction, choose_floor, voxel_volume
from plaque.precision import device_autocast

PREDICT_BATCH = 32


class Predictor(Protocol):
    """A trained method, ready to predict (see the module docstring)."""

    method: str
    preprocess: dict[str, Any]

    def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
        """Cross-sections of one vessel ``(N, s, s)`` float32 in [0, 1], in order along it, and their pixel
        spacing → class maps ``(N, s, s)`` uint8."""
        ...


@torch.no_grad()
def predict_batches(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Class maps ``(N, s, s)`` uint8 of a network mapping (B, 1, s, s) to logits (B, C, s, s), in batches of
    `PREDICT_BATCH` under the device's automatic precision (`plaque.precision.device_autocast`: bf16 or fp16
    on a GPU, bf16 on a CPU with native bf16, else fp32); ``model`` must be on ``device`` and in eval mode."""
    preds = []
    for start in range(0, len(images), PREDICT_BATCH):
        x = torch.from_numpy(np.asarray(images[start : start + PREDICT_BATCH], dtype=np.float32))[:, None].to(device)
        with device_autocast(device):
            logits = model(x)
        preds.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    if not preds:
        return np.zeros((0, *images.shape[1:]), dtype=np.uint8)
    return np.concatenate(preds)


class SegmenterPredictor:
    """One of our Stage-2 networks (`plaque.models.build.load_trained`) as a `Predictor`."""

    def __init__(self, model: torch.nn.Module, method: str, preprocess: dict[str, Any], device: torch.device) -> None:
        self.model, self.method, self.preprocess, self.device = model.to(device).eval(), method, preprocess, device

    def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
        """As `Predictor.predict`; our networks work on the pixel grid and ignore ``spacing_mm``."""
        return predict_batches(self.model, images, self.device)


def segmenter_predictor(checkpoint: Path, record: dict[str, Any], device: torch.device) -> SegmenterPredictor:
    """The registry's predictor of our Stage-2 methods: the network of ``record`` (the loaded ``checkpoint``)."""
    from plaque.models.build import load_trained  # the models are loaded only when a network predicts

    return SegmenterPredictor(load_trained(checkpoint), record["method"], record["preprocess"], device)


def load_predictor(checkpoint: Path, device: torch.device | str = "cpu", profile: str | None = None) -> Predictor:
    """The `Predictor` of a trained method's self-contained ``best.pt`` (or its folder), on ``device``.

    Args:
        profile: when given, the params profile the model must have been trained with.

    Raises:
        InputError: the file is missing, unreadable, not a trained model of a known method, or of another profile.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.pt"
    record = load_checkpoint(checkpoint)
    if "method" not in record or "preprocess" not in record:
        raise InputError(
            checkpoint,
            "is not a trained model of this version of plaque (no method or preprocessing recorded); train it again",
        )
    trained = record.get("config", {}).get("profile")
    if profile is not None and trained != profile:
        raise InputError(
            checkpoint,
            f"was trained with profile {trained!r}, but this run uses profile {profile!r}: pass --profile {trained} "
            f"or use a model trained with {profile!r}",
        )
    loader = import_object(get_method(record["method"]).predictor)
    predictor = loader(checkpoint, record, torch.device(device))
    if "plaque_floor_mm3" not in record:
        return predictor
    return FlooredPredictor(predictor, PlaqueFloor.from_record(record["plaque_floor_mm3"]))


class FlooredPredictor:
    """A `Predictor` whose plaque components under the model's floor become vessel wall (`plaque.postprocess`)."""

    def __init__(self, inner: Predictor, floor: PlaqueFloor) -> None:
        self.inner, self.floor = inner, floor
        self.method, self.preprocess = inner.method, inner.preprocess

    def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
        """As `Predictor.predict`, then `PlaqueFloor.apply` on the vessel's stack."""
        voxel = voxel_volume(spacing_mm, self.preprocess["step_mm"])
        return self.floor.apply(self.inner.predict(images, spacing_mm), voxel)


def fit_plaque_floor(
    predictor: Predictor, processed: Processed, checkpoint: Path, split: str = "val"
) -> FlooredPredictor:
    """Choose the plaque floor of a freshly trained model on ``split`` (`plaque.postprocess.choose_floor`), store
    it in its ``checkpoint`` (``plaque_floor_mm3`` and ``plaque_floor_validation``, written atomically) and
    return the predictor that applies it."""
    vessels = []
    for patient, stacks in vessel_stacks(processed, split).items():
        for stack in stacks:
            stack_spacing = stack_spacing_mm(processed, stack)
            vessels.append(
                VesselPrediction(
                    patient,
                    predictor.predict(processed.images[stack], stack_spacing),
                    np.asarray(processed.labels[stack]),
                    voxel_volume(stack_spacing, predictor.preprocess["step_mm"]),
                )
            )
    floor, table = choose_floor(vessels)
    record = load_checkpoint(checkpoint)
    record["plaque_floor_mm3"], record["plaque_floor_validation"] = floor.as_record(), table
    save_atomic(record, checkpoint)
    return FlooredPredictor(predictor, floor)


def write_predictions(out: Path, predictions: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> list[str]:
    """Write ``out/<patient>.npz`` (``pred`` uint8, ``index`` int64) for each ``(patient, pred, index)``; returns
    the patients. The folder is filled under a temporary name and renamed into place, so ``out`` holds
    either the previous predictions or a complete new set."""
    written = []
    with atomic_folder(Path(out)) as tmp:
        for patient, pred, index in predictions:
            if len(pred) != len(index):
                raise ValueError(f"{patient}: {len(pred)} predicted slices for {len(index)} rows")
            np.savez(
                tmp / f"{patient}.npz", pred=np.asarray(pred, dtype=np.uint8), index=np.asarray(index, dtype=np.int64)
            )
            written.append(patient)
    return written


def vessel_stacks(processed: Processed, split: str) -> dict[str, list[np.ndarray]]:
    """Patient → the rows (int64, manifest order) of each of its vessels' cross-sections in ``split``.

    Raises:
        InputError: the split holds no slice.
    """
    manifest = processed.manifest
    part = manifest[manifest["split"] == split]
    if part.empty:
        raise InputError("data", f"no slices in split {split!r}")
    stacks: dict[str, list[np.ndarray]] = {}
    for (patient, _), group in part.groupby(["patient", "vessel"], sort=False):
        stacks.setdefault(str(patient), []).append(group.index.to_numpy(dtype=np.int64))
    return dict(sorted(stacks.items()))


def predict_patient(
    predictor: Predictor, processed: Processed, stacks: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One patient's class maps ``(N, s, s)`` uint8 and rows ``(N,)`` in manifest order, vessel by vessel."""
    rows = np.sort(np.concatenate(stacks))
    pred = np.zeros((len(rows), *processed.images.shape[1:]), dtype=np.uint8)
    for stack in stacks:
        pred[np.searchsorted(rows, stack)] = predictor.predict(
            processed.images[stack], stack_spacing_mm(processed, stack)
        )
    return pred, rows


def stack_spacing_mm(processed: Processed, stack: np.ndarray) -> float:
    """The pixel spacing a vessel's stack of cross-sections (rows ``stack`` (N,)) is predicted with: their median."""
    return float(np.median(processed.manifest["spacing_mm"].to_numpy(dtype=np.float64)[stack]))


def predict_split(predictor: Predictor, processed: Processed, split: str, out: Path) -> list[str]:
    """Predict every patient of ``split`` and write ``out/<patient>.npz``; returns the patients."""
    stacks = vessel_stacks(processed, split)
    return write_predictions(out, ((p, *predict_patient(predictor, processed, s)) for p, s in stacks.items()))
