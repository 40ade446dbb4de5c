"""One patient of the raw layout, loaded and checked: CT in HU, labels remapped to our classes, centerlines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plaque.errors import InputError
from plaque.io.dicom import read_series
from plaque.io.geometry import Geometry
from plaque.io.labels import read_centerlines, read_labels

DICOM_DIR = "dicom"
LABEL_FILE = "label.nii.gz"
CENTERLINE_FILE = "centerline.json"
PHANTOM_MARKER = ".plaque-phantom"  # in a raw folder the phantom generator wrote (and may replace)
EDGE_TOL_VOXELS = 1e-3  # centerline points may exceed the volume's outer voxel faces by this much


@dataclass
class Patient:
    """A loaded patient.

    Attributes:
        folder: the raw patient folder (its name may be identifying: never write it to outputs).
        patient_id: DICOM PatientID (identifying: only used to derive the pseudonym).
        hu: ``(Z, Y, X)`` float32 Hounsfield units.
        labels: ``(Z, Y, X)`` uint8 classes 0..4 after the label map.
        geometry: the shared grid of ``hu`` and ``labels``.
        centerlines: vessel name -> ``(P, 3)`` LPS mm points; empty without a centerline file.
        study_uid: DICOM StudyInstanceUID (identifying: only used to order follow-up scans).
        series_uid: DICOM SeriesInstanceUID (identifying: only used to detect duplicates).
        study_date: DICOM StudyDate (orders a patient's scans).
    """

    folder: Path
    patient_id: str
    hu: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    centerlines: dict[str, np.ndarray] = field(default_factory=dict)
    study_uid: str = ""
    series_uid: str = ""
    study_date: str = ""


def list_patients(raw: Path) -> list[Path]:
    """The patient folders of ``raw`` (subfolders holding `DICOM_DIR`), sorted by name.

    Hidden entries and plain files are ignored; a subfolder without `DICOM_DIR` is an error.
    """
    if not raw.is_dir():
        raise InputError(raw, "raw data folder does not exist")
    folders = sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith("."))
    strays = [p.name for p in folders if not (p / DICOM_DIR).is_dir()]
    if strays:
        raise InputError(raw, f"subfolder(s) without {DICOM_DIR}/: {', '.join(strays)}")
    if not folders:
        raise InputError(raw, f"no patient folders (subfolders holding {DICOM_DIR}/)")
    return folders


def is_phantom(raw: Path) -> bool:
    """Whether the raw folder ``raw`` is a phantom cohort (it holds `PHANTOM_MARKER`)."""
    return (Path(raw) / PHANTOM_MARKER).is_file()


def load_patient(folder: Path, label_map: dict[int, int]) -> Patient:
    """Load one patient folder: the CT series, the labels on its grid, and the optional centerlines.

    Args:
        folder: holds `DICOM_DIR`/, `LABEL_FILE` and optionally `CENTERLINE_FILE`.
        label_map: source label value -> class id (0..4).

    Raises:
        InputError: naming the offending file and the problem.
    """
    series = read_series(folder / DICOM_DIR)
    hu, geometry, identity = series.hu, series.geometry, series.identity
    labels = read_labels(folder / LABEL_FILE, geometry, label_map)
    centerline_path = folder / CENTERLINE_FILE
    centerlines = read_centerlines(centerline_path) if centerline_path.exists() else {}
    check_centerlines_inside(centerline_path, centerlines, geometry)
    return Patient(
        folder=folder,
        patient_id=identity["PatientID"],
        hu=hu,
        labels=labels,
        geometry=geometry,
        centerlines=centerlines,
        study_uid=identity["StudyInstanceUID"],
        series_uid=identity["SeriesInstanceUID"],
        study_date=identity["StudyDate"],
    )


def check_centerlines_inside(path: Path, centerlines: dict[str, np.ndarray], geometry: Geometry) -> None:
    """Every centerline point must lie within the image volume (outer voxel faces included)."""
    lower, upper = -0.5 - EDGE_TOL_VOXELS, np.array(geometry.shape) - 0.5 + EDGE_TOL_VOXELS
    for name, points in centerlines.items():
        kji = geometry.world_to_index(points)
        outside = np.flatnonzero(((kji < lower) | (kji > upper)).any(axis=1))
        if outside.size:
            x, y, z = points[outside[0]]
            raise InputError(
                path,
                f"vessel {name!r}: point {outside[0]} at ({x:.2f}, {y:.2f}, {z:.2f}) mm lies "
                f"outside the image volume ({outside.size} of {len(points)} points outside)",
            )


def check_unique(patients: list[Patient]) -> None:
    """Two folders must not hold the same series (SeriesInstanceUID; empty values are skipped). The same
    patient in several folders is a normal cohort (follow-up scans), handled by the caller.

    The identifying values themselves are not put in the message.
    """
    seen: dict[str, Path] = {}
    for patient in patients:
        value = patient.series_uid
        if value and value in seen:
            raise InputError(patient.folder, f"same SeriesInstanceUID as {seen[value]}: one series in two folders")
        seen.setdefault(value, patient.folder)
