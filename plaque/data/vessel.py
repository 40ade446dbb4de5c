"""Whole scans for the vessel model: the scan on an isotropic grid, its vessel mask, and training patches.

The vessel model (`plaque.models.vessel`) finds the coronary vessels in a scan that comes without labels or
centerline, so that centerlines can be derived from its mask (`plaque.data.centerlines`). It sees the scan
windowed as the cross-sections are (``preprocess.window_hu``, scaled to [0, 1]) and resampled to an
isotropic grid of ``vessel.spacing_mm``, so that a vessel has the same size in voxels whatever the
scanner's voxels were. Its target is the vessel: wall, lumen and plaque (classes 1..4), against everything
else (the contrast-filled chambers and veins included).

Resampling is linear for images and probabilities, nearest for masks (`to_grid`); both directions use the
same voxel-centre convention, so a mask taken to the grid and back lands on its own voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from plaque.data.centerlines import vessel_mask
from plaque.data.processed import MANIFEST_FILE
from plaque.data.pseudonym import pseudonym, pseudonym_key
from plaque.data.slicing import window
from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.io.patient import is_phantom, list_patients, load_patient
from plaque.progress import progress


@dataclass
class VesselCase:
    """One labelled scan for the vessel model.

    Attributes:
        name: the patient's pseudonym (as in the processed manifest).
        image: ``(Z', Y', X')`` float32 in [0, 1], the windowed scan on the isotropic grid.
        mask: ``(Z', Y', X')`` uint8, 1 on the vessel, on the isotropic grid.
        labels: ``(Z, Y, X)`` uint8 classes 0..4 on the scan's own grid.
        geometry: the scan's own grid.
        centerlines: vessel -> ``(P, 3)`` LPS mm, the patient's given centerlines (empty without a file).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    centerlines: dict[str, np.ndarray] = field(default_factory=dict)


def grid_shape(geometry: Geometry, spacing_mm: float) -> tuple[int, int, int]:
    """The ``(Z', Y', X')`` shape of ``geometry``'s field of view on an isotropic grid of ``spacing_mm``."""
    return tuple(max(1, round(n * s / spacing_mm)) for n, s in zip(geometry.shape, geometry.spacing))  # type: ignore[return-value]


def to_grid(volume: np.ndarray, shape: tuple[int, int, int], linear: bool) -> np.ndarray:
    """``volume`` ``(Z, Y, X)`` resampled over the same field of view to ``shape``: trilinear (``linear``,
    float32 out) or nearest neighbour (same dtype out)."""
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32 if linear else np.uint8))[None, None]
    if linear:
        return F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    return F.interpolate(t.float(), size=shape, mode="nearest-exact")[0, 0].numpy().astype(volume.dtype)


def scan_on_grid(hu: np.ndarray, geometry: Geometry, window_hu: tuple[float, float], spacing_mm: float) -> np.ndarray:
    """``(Z', Y', X')`` float32 in [0, 1]: the scan ``hu`` ``(Z, Y, X)`` windowed, on the isotropic grid."""
    return to_grid(window(hu, window_hu), grid_shape(geometry, spacing_mm), linear=True)


def patient_splits(processed: Path) -> dict[str, str]:
    """Subject pseudonym -> split, from the processed manifest (a follow-up scan ``P…-2`` counts as its subject)."""
    path = Path(processed) / MANIFEST_FILE
    if not path.is_file():
        raise InputError(path, "processed manifest not found; run the preprocess stage first")
    frame = pd.read_csv(path, usecols=["patient", "split"]).drop_duplicates()
    return {str(p).split("-")[0]: str(s) for p, s in zip(frame["patient"], frame["split"])}


def load_cases(raw: Path, processed: Path, cfg: dict[str, Any], splits: tuple[str, ...]) -> dict[str, list[VesselCase]]:
    """The labelled scans of ``raw`` in ``splits``, each in the split preprocessing put its patient in.

    Args:
        raw: the raw cohort folder (`plaque.io`); processed: the folder preprocessing wrote from it.
        cfg: the resolved configuration (``preprocess`` for the label map, window and pseudonym key,
            ``vessel`` for the grid).

    Returns:
        split -> cases, in patient-folder order; patients preprocessing skipped are left out.
    """
    prep, spacing = cfg["preprocess"], float(cfg["vessel"]["spacing_mm"])
    key, _ = pseudonym_key(prep["pseudonym_salt"], is_phantom(raw))
    split_of = patient_splits(processed)
    out: dict[str, list[VesselCase]] = {s: [] for s in splits}
    for folder in progress(list_patients(raw), desc="load scans", unit="scan"):
        patient = load_patient(folder, prep["label_map"])
        name = pseudonym(patient.patient_id, key)
        split = split_of.get(name)
        if split not in out:
            continue
        mask = vessel_mask(patient.labels).astype(np.uint8)
        shape = grid_shape(patient.geometry, spacing)
        out[split].append(
            VesselCase(
                name=name,
                image=scan_on_grid(patient.hu, patient.geometry, prep["window_hu"], spacing),
                mask=to_grid(mask, shape, linear=False),
                labels=patient.labels,
                geometry=patient.geometry,
                centerlines=patient.centerlines,
            )
        )
    return out


def sample_patch(
    case: VesselCase, patch: int, on_vessel: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``(patch, patch, patch)`` crop of ``case``'s image and mask, zero-padded where it leaves the grid:
    centred on a random vessel voxel (``on_vessel``, where the case has one) or anywhere."""
    shape = np.array(case.image.shape)
    vessel = np.flatnonzero(case.mask) if on_vessel else np.empty(0, dtype=np.int64)
    if len(vessel):
        centre = np.array(np.unravel_index(vessel[rng.integers(len(vessel))], case.mask.shape))
    else:
        centre = np.array([rng.integers(n) for n in shape])
    start = centre - patch // 2
    image = np.zeros((patch,) * 3, dtype=np.float32)
    mask = np.zeros((patch,) * 3, dtype=np.uint8)
    src_lo, src_hi = np.maximum(start, 0), np.minimum(start + patch, shape)
    dst_lo = src_lo - start
    dst = tuple(slice(a, a + (b - c)) for a, b, c in zip(dst_lo, src_hi, src_lo))
    src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
    image[dst], mask[dst] = case.image[src], case.mask[src]
    return image, mask
