"""Small plaque components removed at inference, with a size floor per plaque class chosen on the validation split.

A short training run leaves a few stray plaque voxels in vessels that have none. The evaluator scores a class
per patient and leaves it out only when truth and prediction both lack it, so one stray voxel turns a
patient's plaque Dice from "not scored" into 0. nnU-Net meets the same problem with post-processing chosen
on its validation folds; every method here gets the same treatment:

- **The rule** (`PlaqueFloor.apply`): in the predicted stack of one vessel ``(N, s, s)`` (its cross-sections
  in order along the centerline), each 26-connected component of a plaque class (calcified, non-calcified)
  smaller than that class's floor in mm³ becomes vessel wall, the tissue plaque grows in. A voxel's volume
  is the pixel spacing² × the spacing of the cross-sections (``step_mm``), as the evaluator measures volumes.
- **The choice** (`choose_floor`): each class's floor is the one of `CANDIDATES_MM3` that gives the highest
  mean per-patient Dice of that class on the validation split, under the evaluator's rule; ties go to the
  smaller floor, so 0 (nothing removed) stands unless a floor measurably helps. A class's floor changes only
  that class's voxels, so the two classes are chosen independently.
- **Where it lives:** the trainer chooses the floor after training (`fit_plaque_floor`) and stores it in the
  self-contained ``best.pt`` (``plaque_floor_mm3``, with the validation figures behind it under
  ``plaque_floor_validation``); `plaque.inference.load_predictor` applies it wherever the model predicts
  (test split, ``plaque.predict``, ``plaque.segment``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from plaque.classes import CLASS_NAMES, PLAQUE_CLASSES, WALL

CANDIDATES_MM3: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def components(pred: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of class ``cls`` in a stack ``pred`` (N, s, s): the component id of each voxel
    ``(N, s, s)`` int32 (0 outside the class) and each component's voxel count ``(K + 1,)`` (entry 0 unused)."""
    labels, count = ndimage.label(pred == cls, structure=_CONNECTIVITY)
    return labels, np.bincount(labels.ravel(), minlength=count + 1)


@dataclass(frozen=True)
class PlaqueFloor:
    """The smallest plaque component kept, per plaque class, in mm³ (0: keep all)."""

    min_mm3: Mapping[int, float]

    def apply(self, pred: np.ndarray, voxel_mm3: float) -> np.ndarray:
        """A copy of one vessel's stack ``pred`` (N, s, s) uint8 with plaque components under their class's
        floor relabelled as vessel wall; ``voxel_mm3``: the volume of one voxel of the stack."""
        out = pred.copy()
        for cls, floor in self.min_mm3.items():
            if floor <= 0:
                continue
            labels, sizes = components(pred, cls)
            small = sizes * voxel_mm3 < floor
            small[0] = False
            out[small[labels]] = WALL
        return out

    def as_record(self) -> dict[str, float]:
        """``{class name: floor mm³}``, as ``best.pt`` stores it."""
        return {CLASS_NAMES[c]: float(self.min_mm3.get(c, 0.0)) for c in PLAQUE_CLASSES}

    @classmethod
    def from_record(cls, record: Mapping[str, float]) -> PlaqueFloor:
        """Inverse of `as_record`."""
        return cls({c: float(record[CLASS_NAMES[c]]) for c in PLAQUE_CLASSES})


@dataclass(frozen=True)
class VesselPrediction:
    """One vessel of one patient: the raw predicted stack, its truth (both (N, s, s) uint8) and voxel volume."""

    patient: str
    pred: np.ndarray
    truth: np.ndarray
    voxel_mm3: float


def floor_dice(vessels: Iterable[VesselPrediction], cls: int, floors: Iterable[float]) -> dict[float, float]:
    """Mean per-patient Dice of class ``cls`` (patients lacking it in truth and prediction left out) for each
    floor in ``floors``, from the raw predictions ``vessels``; NaN where no patient is scored."""
    floors = list(floors)
    # per patient and floor: intersection, predicted and true voxel counts (truth does not depend on the floor)
    counts: dict[str, np.ndarray] = {}
    for v in vessels:
        labels, sizes = components(v.pred, cls)
        truth = v.truth == cls
        hits = np.bincount(labels[truth], minlength=len(sizes))
        row = counts.setdefault(v.patient, np.zeros((len(floors), 3)))
        for i, floor in enumerate(floors):
            keep = sizes * v.voxel_mm3 >= floor
            keep[0] = False
            row[i] += (hits[keep].sum(), sizes[keep].sum(), truth.sum())
    result = {}
    for i, floor in enumerate(floors):
        scores = [2 * r[i, 0] / (r[i, 1] + r[i, 2]) for r in counts.values() if r[i, 1] + r[i, 2] > 0]
        result[floor] = float(np.mean(scores)) if scores else float("nan")
    return result


def choose_floor(
    vessels: list[VesselPrediction], candidates: Iterable[float] = CANDIDATES_MM3
) -> tuple[PlaqueFloor, dict[str, dict[str, float]]]:
    """Each plaque class's floor: the candidate with the highest validation Dice (`floor_dice`), the smallest
    on ties. Returns it and the figures behind it, ``{class name: {floor as text: Dice}}``."""
    candidates = sorted(candidates)
    chosen, table = {}, {}
    for cls in PLAQUE_CLASSES:
        dice = floor_dice(vessels, cls, candidates)
        scored = {f: d for f, d in dice.items() if not np.isnan(d)}
        chosen[cls] = max(scored, key=lambda f: (scored[f], -f)) if scored else 0.0
        table[CLASS_NAMES[cls]] = {f"{f:g}": round(d, 4) for f, d in dice.items()}
    return PlaqueFloor(chosen), table


def voxel_volume(spacing_mm: float, step_mm: float) -> float:
    """mm³ of one voxel of a stack of cross-sections with pixel spacing ``spacing_mm``, ``step_mm`` apart."""
    return float(spacing_mm) ** 2 * float(step_mm)


def describe_floor(record: Mapping[str, Any]) -> str:
    """``"calcified ≥ 2 mm³, non_calcified ≥ 8 mm³"`` from a model record; ``"none"`` when all floors are 0 or
    the record predates the floor."""
    floors = record.get("plaque_floor_mm3") or {}
    parts = [f"{name} ≥ {value:g} mm³" for name, value in floors.items() if value > 0]
    return ", ".join(parts) if parts else "none"
