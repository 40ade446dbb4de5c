"""Segment scans with a trained method and write everything a reader of the scan needs.

Output folder (filled under a temporary name and renamed into place: it holds the previous run or this
complete one, never a part)::

    OUT/scan_001/labels.nii.gz   classes 0..4 on the scan's own voxel grid, affine from its geometry
    OUT/scan_001/seg.dcm         DICOM Segmentation referencing the series: opens over the CT in a viewer
                                 (DICOM input only; a NIfTI or NRRD volume gets labels.nii.gz alone)
    OUT/scan_001/centerlines/    the centerlines used (given, or derived from the vessel model's mask), one
                                 3D Slicer markups curve <vessel>.mrk.json each (none for axial tiles); the
                                 folder is a valid ``--centerline``
    OUT/scan_001/overlay.png     the cross-sections with the most predicted plaque, in the paper's colours
    OUT/volumes.csv              per scan and vessel (and ``all``): wall, lumen, calcified, non-calcified and
                                 total plaque volume in mm³, and how the scan was cut (`GIVEN`, `DERIVED` or
                                 the axial tiles of `plaque.segment.volume.FALLBACK`)
    OUT/segment.json             method, checkpoint, and per scan how it was cut and how long it took
    OUT/mapping.csv              scan name -> input folder. Folder names are often patient names: this file
                                 stays on your machine (delete it before sharing OUT)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from plaque import __version__
from plaque.atomic import atomic_folder
from plaque.classes import CALCIFIED, CLASS_NAMES, FOREGROUND, NONCALCIFIED, PLAQUE_CLASSES
from plaque.inference import Predictor
from plaque.io.labels import write_labels
from plaque.io.markups import write_curves
from plaque.io.seg import write_segmentation
from plaque.progress import progress
from plaque.segment.scans import Scan, load_scan, scan_folders
from plaque.segment.vessels import VesselFinder
from plaque.segment.volume import FALLBACK, Sections, cut_and_predict, to_voxels
from plaque.viz import slice_grid

LABELS_FILE, SEG_FILE, OVERLAY_FILE, CENTERLINES_DIR = "labels.nii.gz", "seg.dcm", "overlay.png", "centerlines"
VOLUMES_FILE, RUN_FILE, MAPPING_FILE = "volumes.csv", "segment.json", "mapping.csv"
OVERLAY_SECTIONS = 6
ALL_VESSELS = "all"
GIVEN = "centerline"  # cut along the centerline that came with the scan
DERIVED = "centerline from the vessel model"  # cut along centerlines derived from the vessel model's mask

log = logging.getLogger(__name__)


@dataclass
class Segmented:
    """One scan, segmented.

    Attributes:
        cut: how the scan was cut: `GIVEN`, `DERIVED` or `FALLBACK`.
        labels: ``(Z, Y, X)`` uint8 classes on the scan's grid.
        owner: ``(Z, Y, X)`` int16 index into ``sections`` of the cross-sections that decided each voxel, -1: none.
        sections: the cross-sections cut and predicted, per vessel (or the axial tiles of the fallback).
    """

    cut: str
    labels: np.ndarray
    owner: np.ndarray
    sections: list[Sections]


def segment_scan(predictor: Predictor, scan: Scan, finder: VesselFinder | None) -> Segmented:
    """Cut, predict and map back one scan (`plaque.segment.volume`). A scan without a centerline is cut along
    the centerlines ``finder`` derives (they replace ``scan.centerlines``), or into axial tiles without one.

    Raises:
        InputError: the vessel model finds no usable vessel in the scan.
    """
    cut = GIVEN if scan.centerlines else FALLBACK
    if not scan.centerlines and finder is not None:
        step_mm = float(predictor.preprocess["step_mm"])
        scan.centerlines = finder.centerlines(scan.series.hu, scan.series.geometry, step_mm, scan.folder)
        cut = DERIVED
        log.info("%s: %d centerline(s) derived from the vessel model's mask", scan.name, len(scan.centerlines))
    if cut == FALLBACK:
        log.warning("%s: no centerline; cut into %s, expect false positives away from the vessels", scan.name, FALLBACK)
    sections = cut_and_predict(predictor, scan.series.hu, scan.series.geometry, scan.centerlines)
    labels, owner = to_voxels(scan.series.geometry, sections)
    return Segmented(cut, labels, owner, sections)


def volume_rows(scan: Scan, result: Segmented) -> list[dict[str, object]]:
    """Rows of `VOLUMES_FILE` for one scan: one per vessel and one for the whole scan, volumes in mm³."""
    voxel_mm3 = float(np.prod(scan.series.geometry.spacing))
    parts = [(s.cut.vessel, result.owner == n) for n, s in enumerate(result.sections)]
    rows = []
    for vessel, where in [*parts, (ALL_VESSELS, np.ones(result.labels.shape, dtype=bool))]:
        counts = np.bincount(result.labels[where], minlength=len(CLASS_NAMES))
        row: dict[str, object] = {"scan": scan.name, "vessel": vessel, "cut": result.cut}
        row.update({f"{CLASS_NAMES[c]}_mm3": round(float(counts[c]) * voxel_mm3, 3) for c in FOREGROUND})
        row["plaque_mm3"] = round(float(counts[CALCIFIED] + counts[NONCALCIFIED]) * voxel_mm3, 3)
        rows.append(row)
    return rows


def overlay_figure(result: Segmented, path: Path) -> None:
    """`OVERLAY_SECTIONS` cross-sections (the most predicted plaque first, then evenly spaced) as image, classes
    and overlay, saved to ``path``."""
    picks = []
    for s in result.sections:
        plaque = np.isin(s.pred, PLAQUE_CLASSES).sum(axis=(1, 2))
        picks += [(int(plaque[i]), s, int(i)) for i in range(len(s.pred))]
    ranked = sorted(picks, key=lambda p: -p[0])
    chosen = [p for p in ranked if p[0] > 0][:OVERLAY_SECTIONS]
    rest = [p for p in picks if p[0] == 0]
    spare = OVERLAY_SECTIONS - len(chosen)
    if spare > 0 and rest:
        chosen += [rest[int(i)] for i in np.unique(np.linspace(0, len(rest) - 1, spare).round())]
    if not chosen:
        return
    fig = slice_grid(
        [s.images[i] for _, s, i in chosen],
        [s.pred[i] for _, s, i in chosen],
        [f"{s.cut.vessel} #{i}" for _, s, i in chosen],
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def segment(
    predictor: Predictor,
    input_dir: Path,
    out: Path,
    centerline: Path | None = None,
    series_uid: str | None = None,
    checkpoint: Path | None = None,
    finder: VesselFinder | None = None,
) -> pd.DataFrame:
    """Segment every scan of ``input_dir`` (layouts: `plaque.segment.scans`) into ``out`` (see the module
    docstring); returns the volume table. Scans without a centerline are cut along centerlines from
    ``finder``'s vessel mask, or into axial tiles where ``finder`` is ``None``.

    Raises:
        InputError: bad input (naming the file and the problem); nothing is written then.
    """
    folders = scan_folders(input_dir, centerline)
    rows: list[dict[str, object]] = []
    runs: list[dict[str, object]] = []
    mapping = []
    with atomic_folder(Path(out)) as tmp:
        for n, (folder, line) in enumerate(progress(folders, desc="segment", unit="scan"), start=1):
            t0 = time.perf_counter()
            scan = load_scan(f"scan_{n:03d}", folder, line, series_uid)
            result = segment_scan(predictor, scan, finder)
            target = tmp / scan.name
            target.mkdir()
            geometry = scan.series.geometry
            write_labels(target / LABELS_FILE, result.labels, geometry)
            if scan.series.headers:  # DICOM input: a Segmentation referencing its instances
                write_segmentation(
                    target / SEG_FILE,
                    result.labels,
                    scan.series.headers,
                    geometry,
                    algorithm=predictor.method,
                    version=__version__,
                )
            if scan.centerlines:
                write_curves(target / CENTERLINES_DIR, scan.centerlines)
            overlay_figure(result, target / OVERLAY_FILE)
            rows += volume_rows(scan, result)
            mapping.append({"scan": scan.name, "input": str(Path(folder).resolve())})
            runs.append(
                {
                    "scan": scan.name,
                    "cut": result.cut,
                    "vessels": sorted(scan.centerlines),
                    "cross_sections": int(sum(len(s.pred) for s in result.sections)),
                    "voxels": list(geometry.shape),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
        volumes = pd.DataFrame(rows)
        volumes.to_csv(tmp / VOLUMES_FILE, index=False)
        pd.DataFrame(mapping).to_csv(tmp / MAPPING_FILE, index=False)
        (tmp / RUN_FILE).write_text(
            json.dumps(
                {
                    "method": predictor.method,
                    "checkpoint": None if checkpoint is None else str(checkpoint),
                    "vessel_model": None if finder is None else str(finder.path),
                    "plaque_version": __version__,
                    "preprocess": predictor.preprocess,
                    "scans": runs,
                },
                indent=1,
                default=str,
            )
        )
    log.info(
        "segmented %d scan(s) into %s; %s links names to input folders: keep it on this machine",
        len(folders),
        out,
        Path(out) / MAPPING_FILE,
    )
    return volumes
