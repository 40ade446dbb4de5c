"""The scans ``python -m plaque.segment --input`` names: one DICOM series folder, or a folder of patients.

Accepted layouts:

    INPUT/*.dcm                        one series (``--centerline FILE`` optional)
    INPUT/<patient>/dicom/*.dcm        several, each with an optional INPUT/<patient>/centerline.json

Each scan is named ``scan_001``, ``scan_002``, ... in the order of its folder's name, so that outputs carry no
folder name (folder names are often patient names); `Scan.folder` links a name back to its input, for the
user's own mapping file only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plaque.errors import InputError
from plaque.io.dicom import Series, read_series
from plaque.io.labels import read_centerlines
from plaque.io.patient import CENTERLINE_FILE, DICOM_DIR, check_centerlines_inside


@dataclass
class Scan:
    """One scan to segment.

    Attributes:
        name: its output name (``scan_NNN``).
        folder: the DICOM folder it was read from (identifying: for the local mapping file only).
        series: the series read (HU, grid, source headers).
        centerlines: vessel -> ``(P, 3)`` LPS mm; empty without a centerline file.
        centerline_file: where they came from, or ``None``.
    """

    name: str
    folder: Path
    series: Series
    centerlines: dict[str, np.ndarray]
    centerline_file: Path | None


def scan_folders(input_dir: Path, centerline: Path | None) -> list[tuple[Path, Path | None]]:
    """``(DICOM folder, centerline file or None)`` of every scan under ``input_dir`` (see the module docstring).

    Raises:
        InputError: a missing or empty folder, a folder of patients without DICOM, or ``--centerline`` with
            several scans.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder does not exist")
    entries = [p for p in input_dir.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise InputError(input_dir, "input folder is empty: expected DICOM files or patient folders holding dicom/")
    if any(p.is_file() for p in entries):
        return [(input_dir, centerline)]
    patients = sorted(p for p in entries if (p / DICOM_DIR).is_dir())
    if not patients:
        raise InputError(input_dir, f"no DICOM files and no patient folders holding {DICOM_DIR}/")
    if centerline is not None and len(patients) > 1:
        raise InputError(
            centerline,
            f"--centerline names one scan's centerline, but {input_dir} holds "
            f"{len(patients)} patients: put a {CENTERLINE_FILE} in each patient folder",
        )
    found = []
    for p in patients:
        own = p / CENTERLINE_FILE
        found.append((p / DICOM_DIR, centerline if centerline is not None else own if own.is_file() else None))
    return found


def load_scan(name: str, folder: Path, centerline: Path | None, series_uid: str | None = None) -> Scan:
    """Read one scan and its centerlines (checked to lie inside the volume)."""
    series = read_series(folder, series_uid)
    centerlines = read_centerlines(centerline) if centerline is not None else {}
    if centerline is not None:
        check_centerlines_inside(centerline, centerlines, series.geometry)
    return Scan(name, folder, series, centerlines, centerline)
