"""Fixtures writing small CT series and patient folders with the package's own writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from plaque.io.dicom import write_series
from plaque.io.geometry import Geometry
from plaque.io.labels import write_centerlines, write_labels
from plaque.io.patient import CENTERLINE_FILE, DICOM_DIR, LABEL_FILE
from tests.io.factories import TAGS, axial, random_hu, random_labels


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, np.ndarray, Geometry]:
    """A 4x16x16 axial series in ``tmp_path/dicom``: (folder, hu, geometry)."""
    folder, hu, geometry = tmp_path / "dicom", random_hu(), axial()
    write_series(folder, hu, geometry, TAGS, "series")
    return folder, hu, geometry


@pytest.fixture
def make_patient() -> Callable[..., Path]:
    """Write a patient folder (series, labels, optional centerlines) and return it."""

    def make(
        folder: Path,
        geometry: Geometry | None = None,
        tags: dict[str, str] | None = None,
        uid_seed: str | None = None,
        centerlines: dict[str, np.ndarray] | None = None,
    ) -> Path:
        geometry = geometry or axial()
        write_series(folder / DICOM_DIR, random_hu(geometry.shape), geometry, tags or TAGS, uid_seed or folder.name)
        write_labels(folder / LABEL_FILE, random_labels(geometry.shape), geometry)
        if centerlines is not None:
            write_centerlines(folder / CENTERLINE_FILE, centerlines)
        return folder

    return make
