"""The scans ``python -m plaque.segment --input`` names: one scan, or a folder of patients.

Accepted layouts (decided by the subfolders and the DICOMDIR, never by other stray files)::

    INPUT/*.dcm                            one series: a folder without subfolders (``--centerline`` optional)
    INPUT/DICOMDIR                         one series, read through the DICOMDIR (a CD or media export)
    INPUT = scan.nii.gz | scan.nrrd        one volume file
    INPUT/dicom/ or INPUT/image.nii.gz     one patient folder (`plaque.io.patient`), with its own centerline
    INPUT/<patient>/dicom/ or image.*      several, each with an optional centerline (centerline.json,
                                           centerline.mrk.json or centerlines/)

Each scan is named ``scan_001``, ``scan_002``, ... in the order of its folder's name, so that outputs carry no
folder name (folder names are often patient names); `Scan.folder` links a name back to its input, for the
user's own mapping file only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plaque.errors import InputError
from plaque.io.dicom import DICOMDIR, Series
from plaque.io.patient import (
    SCAN_NAMES,
    centerline_source,
    check_centerlines_inside,
    read_centerline_source,
    read_scan,
    scan_source,
)
from plaque.io.volume import is_volume_file


@dataclass
class Scan:
    """One scan to segment.

    Attributes:
        name: its output name (``scan_NNN``).
        folder: the DICOM folder or volume file it was read from (identifying: for the local mapping file only).
        series: the series read (HU, grid, source headers).
        centerlines: vessel -> ``(P, 3)`` LPS mm; empty without a centerline file (segmenting then fills in
            the centerlines it derives from the vessel model: `plaque.segment.run.segment_scan`).
        centerline_file: where they came from, or ``None``.
    """

    name: str
    folder: Path
    series: Series
    centerlines: dict[str, np.ndarray]
    centerline_file: Path | None


def scan_folders(input_dir: Path, centerline: Path | None) -> list[tuple[Path, Path | None]]:
    """``(DICOM folder or volume file, centerline source or None)`` of every scan under ``input_dir`` (see the
    module docstring).

    Raises:
        InputError: a missing or empty folder, subfolders none of which is a patient folder, or ``--centerline``
            with several scans.
    """
    input_dir = Path(input_dir)
    if input_dir.is_file() and is_volume_file(input_dir):
        return [(input_dir, centerline)]
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder does not exist")
    entries = [p for p in input_dir.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise InputError(
            input_dir, f"input folder is empty: expected DICOM files or patient folders holding {SCAN_NAMES}"
        )
    if (input_dir / DICOMDIR).is_file():
        return [(input_dir, centerline)]
    own = scan_source(input_dir)
    if own is not None:
        return [(own, centerline if centerline is not None else centerline_source(input_dir))]
    subfolders = [p for p in entries if p.is_dir()]
    if not subfolders:
        return [(input_dir, centerline)]
    patients = sorted(p for p in subfolders if scan_source(p) is not None)
    if not patients:
        raise InputError(
            input_dir, f"no DICOMDIR and no patient folders (subfolders holding {SCAN_NAMES}) among its subfolders"
        )
    if centerline is not None and len(patients) > 1:
        raise InputError(
            centerline,
            f"--centerline names one scan's centerline, but {input_dir} holds "
            f"{len(patients)} patients: put a centerline file in each patient folder",
        )
    return [(scan_source(p), centerline if centerline is not None else centerline_source(p)) for p in patients]


def load_scan(name: str, source: Path, centerline: Path | None, series_uid: str | None = None) -> Scan:
    """Read one scan (a DICOM folder or a volume file) and its centerlines (checked to lie inside the volume)."""
    series = read_scan(source, series_uid)
    centerlines = read_centerline_source(centerline) if centerline is not None else {}
    if centerline is not None:
        check_centerlines_inside(centerline, centerlines, series.geometry)
    return Scan(name, source, series, centerlines, centerline)
