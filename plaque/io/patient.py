"""One patient of the raw layout, loaded and checked: CT in HU, labels remapped to our classes, centerlines.

A patient folder holds its scan as `DICOM_DIR`/ (a DICOM series) or as one of `IMAGE_FILES` (NIfTI or
NRRD), its labels as one of `LABEL_FILES`, and optionally its centerlines as one of `CENTERLINE_SOURCES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plaque.errors import InputError
from plaque.io.dicom import Series, read_series
from plaque.io.geometry import Geometry
from plaque.io.labels import read_centerlines, read_labels
from plaque.io.markups import is_markups, read_curves
from plaque.io.volume import is_volume_file, read_image

DICOM_DIR = "dicom"
IMAGE_FILES = ("image.nii.gz", "image.nii", "image.nrrd")  # a volume instead of DICOM_DIR
LABEL_FILE = "label.nii.gz"
LABEL_FILES = (LABEL_FILE, "label.nii", "label.nrrd")
CENTERLINE_FILE = "centerline.json"
CENTERLINE_SOURCES = (CENTERLINE_FILE, "centerline.mrk.json", "centerlines")  # the last: a folder of .mrk.json
SCAN_NAMES = f"{DICOM_DIR}/ or {' or '.join(IMAGE_FILES)}"
PHANTOM_MARKER = ".plaque-phantom"  # in a raw folder the phantom generator wrote (and may replace)
EDGE_TOL_VOXELS = 1e-3  # centerline points may exceed the volume's outer voxel faces by this much


@dataclass
class Patient:
    """A loaded patient.

    Attributes:
        folder: the raw patient folder (its name may be identifying: never write it to outputs).
        patient_id: DICOM PatientID, for a volume its folder's name (identifying: only used to derive the pseudonym).
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
    """The patient folders of ``raw`` (subfolders holding a scan: `scan_source`), sorted by name.

    Hidden entries and plain files are ignored; a subfolder without a scan is an error.
    """
    if not raw.is_dir():
        raise InputError(raw, "raw data folder does not exist")
    folders = sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith("."))
    strays = [p.name for p in folders if scan_source(p) is None]
    if strays:
        raise InputError(raw, f"subfolder(s) without {SCAN_NAMES}: {', '.join(strays)}")
    if not folders:
        raise InputError(raw, f"no patient folders (subfolders holding {SCAN_NAMES})")
    return folders


def scan_source(folder: Path) -> Path | None:
    """A patient folder's scan: its `DICOM_DIR` or its image volume; None when it holds neither."""
    return _the_one(folder, (DICOM_DIR, *IMAGE_FILES), "scans")


def centerline_source(folder: Path) -> Path | None:
    """A patient folder's centerline file or folder (`CENTERLINE_SOURCES`); None when it holds none."""
    return _the_one(folder, CENTERLINE_SOURCES, "centerline sources")


def _the_one(folder: Path, names: tuple[str, ...], what: str) -> Path | None:
    """The one entry of ``folder`` among ``names``, or None; several are an error."""
    found = [folder / name for name in names if (folder / name).exists()]
    if len(found) > 1:
        raise InputError(folder, f"holds several {what} ({', '.join(p.name for p in found)}): keep one")
    return found[0] if found else None


def read_scan(source: Path, series_uid: str | None = None) -> Series:
    """Read a scan: a NIfTI or NRRD volume file, else a DICOM folder (``series_uid`` chooses among several)."""
    return read_image(source) if is_volume_file(source) else read_series(source, series_uid)


def read_centerline_source(path: Path) -> dict[str, np.ndarray]:
    """Centerlines (vessel -> ``(P, 3)`` LPS mm) from a ``centerline.json``-style file, a Slicer ``.mrk.json``
    file or a folder of them (`plaque.io.markups`)."""
    return read_curves(path) if path.is_dir() or is_markups(path) else read_centerlines(path)


def is_phantom(raw: Path) -> bool:
    """Whether the raw folder ``raw`` is a phantom cohort (it holds `PHANTOM_MARKER`)."""
    return (Path(raw) / PHANTOM_MARKER).is_file()


def load_patient(folder: Path, label_map: dict[int, int]) -> Patient:
    """Load one patient folder: the CT series, the labels on its grid, and the optional centerlines.

    Args:
        folder: holds a scan (`DICOM_DIR`/ or one of `IMAGE_FILES`), one of `LABEL_FILES` and optionally one of
            `CENTERLINE_SOURCES`.
        label_map: source label value -> class id (0..4).

    Raises:
        InputError: naming the offending file and the problem.
    """
    source = scan_source(folder)
    if source is None:
        raise InputError(folder, f"patient folder holds no scan ({SCAN_NAMES})")
    series = read_scan(source)
    hu, geometry, identity = series.hu, series.geometry, series.identity
    labels = read_labels(_the_one(folder, LABEL_FILES, "label files") or folder / LABEL_FILE, geometry, label_map)
    centerline_path = centerline_source(folder)
    centerlines = {} if centerline_path is None else read_centerline_source(centerline_path)
    if centerline_path is not None:
        check_centerlines_inside(centerline_path, centerlines, geometry)
    return Patient(
        folder=folder,
        patient_id=identity["PatientID"] if source.name == DICOM_DIR else folder.name,
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
