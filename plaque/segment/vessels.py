"""Centerlines for a scan that comes without one: the vessel model's mask, skeletonised.

The vessel model (`plaque.models.vessel`, trained by the ``vessel`` stage into ``models/vessel/best.pt``)
finds the coronary vessels on its isotropic grid; its mask, back on the scan's grid, becomes centerlines as
a label volume does (`plaque.data.centerlines.derive_centerlines`), resampled at the cross-section step the
segmenting model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plaque.data.centerlines import derive_centerlines
from plaque.data.vessel import scan_on_grid
from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.models.vessel import load_vessel_model, predict_vessel

DEFAULT_VESSEL_MODEL = Path("models/vessel/best.pt")  # where the ``vessel`` stage writes it


@dataclass
class VesselFinder:
    """A loaded vessel model.

    Attributes:
        net: the network, in eval mode on ``device``.
        record: its checkpoint record (`plaque.models.vessel.vessel_record`).
        path: the checkpoint it came from.
        device: where it runs.
    """

    net: torch.nn.Module
    record: dict[str, Any]
    path: Path
    device: torch.device

    def mask(self, hu: np.ndarray, geometry: Geometry) -> np.ndarray:
        """``(Z, Y, X)`` bool: the vessel in a scan ``hu`` ``(Z, Y, X)`` (Hounsfield units) on its grid ``geometry``."""
        settings = self.record["vessel"]
        image = scan_on_grid(hu, geometry, self.record["window_hu"], float(settings["spacing_mm"]))
        return predict_vessel(self.net, image, geometry.shape, settings, self.device)

    def centerlines(self, hu: np.ndarray, geometry: Geometry, step_mm: float, where: Path) -> dict[str, np.ndarray]:
        """Vessel -> ``(P, 3)`` LPS mm centerlines of the scan ``hu`` on ``geometry``, points ``step_mm`` apart.

        Raises:
            InputError: naming ``where``, when the model finds no vessel or none with a branch of at least
                `plaque.data.centerlines.MIN_BRANCH_MM`.
        """
        return mask_centerlines(self.mask(hu, geometry), geometry, step_mm, where)


def mask_centerlines(mask: np.ndarray, geometry: Geometry, step_mm: float, where: Path) -> dict[str, np.ndarray]:
    """Vessel -> ``(P, 3)`` LPS mm centerlines of a vessel model's ``mask`` ``(Z, Y, X)`` bool on ``geometry``,
    points ``step_mm`` apart.

    Raises:
        InputError: naming ``where``, when the mask holds no vessel or none with a branch of at least
            `plaque.data.centerlines.MIN_BRANCH_MM`.
    """
    try:
        return derive_centerlines(mask.astype(np.uint8), geometry, step_mm, where)
    except InputError as e:
        raise InputError(
            where, f"the vessel model found no usable vessel ({e.problem}); give --centerline, or --axial-tiles"
        ) from None


def load_vessel_finder(path: Path, device: torch.device) -> VesselFinder:
    """The vessel model of ``path`` (a ``best.pt`` or its folder) on ``device``.

    Raises:
        InputError: the file is missing (with how to get one) or is not a vessel model.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_VESSEL_MODEL.name
    if not path.is_file():
        raise InputError(
            path,
            "vessel model not found: train it (dvc repro vessel) or pass --vessel-model; "
            "or give --centerline, or ask for --axial-tiles",
        )
    net, record = load_vessel_model(path, device)
    return VesselFinder(net, record, path, device)
