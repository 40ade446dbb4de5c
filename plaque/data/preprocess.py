"""RAW patients (DICOM + labels + centerlines) -> windowed 2D slices, a manifest and a patient-level split.

Output folder (written to a temporary sibling, then renamed into place)::

    OUT/images.npy     (N, H, W) float32 in [0, 1] (HU clipped to window_hu)
    OUT/labels.npy     (N, H, W) uint8 classes 0..4
    OUT/manifest.csv   one row per slice (see MANIFEST_COLUMNS)
    OUT/summary.json   counts per split, skips, class fractions, settings
    OUT/centerlines/<pseudonym>/<vessel>.mrk.json   derived centerlines (3D Slicer markups curves), if any

A patient without a centerline file gets centerlines derived from its labels (`plaque.data.centerlines`);
the manifest's last column `centerline` says for each row where its centerline came from (`given` or
`derived`).

Rows are grouped by split (in the order of ``preprocess.split``), then by pseudonym, vessel and
position along the vessel. No identifying value (DICOM tags, raw folder names) reaches the outputs
or the log: patients are named by pseudonym, or by ordinal before their pseudonym is known. The key is
``PLAQUE_PSEUDONYM_KEY``, required unless the raw folder is the phantom's (`plaque.data.pseudonym`).

Several folders of one patient (one PatientID: follow-up scans) are kept as scans ``<pseudonym>-1``,
``<pseudonym>-2``, ... in StudyDate order, all in the same split; the same series twice is an error.

Command line: ``python -m plaque.data.preprocess --raw DIR --out DIR [--params FILE] [--profile NAME]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plaque.atomic import atomic_folder
from plaque.classes import CALCIFIED, CLASS_NAMES, FOREGROUND, NONCALCIFIED, NUM_CLASSES
from plaque.cli import add_config_options, command_line, run_cli
from plaque.config import load_config, worker_processes
from plaque.data import slicing
from plaque.data.centerlines import derive_centerlines
from plaque.data.processed import IMAGES_FILE, LABELS_FILE, MANIFEST_COLUMNS, MANIFEST_FILE, SUMMARY_FILE
from plaque.data.pseudonym import pseudonym, pseudonym_key, scan_names
from plaque.data.splits import split_patients
from plaque.errors import InputError
from plaque.io.markups import write_curves
from plaque.io.patient import DICOM_DIR, Patient, check_unique, is_phantom, list_patients, load_patient
from plaque.progress import progress

GIVEN, DERIVED = "given", "derived"  # where a patient's centerlines came from (manifest column `centerline`)
CENTERLINE_COLUMN = "centerline"  # manifest column after MANIFEST_COLUMNS: GIVEN or DERIVED
CENTERLINES_DIR = "centerlines"  # OUT/centerlines/<patient>/<vessel>.mrk.json: the derived centerlines
TEST_ONLY = {"test": 1.0}  # preprocess.split for a cohort that is only predicted (every patient a test patient)

log = logging.getLogger(__name__)


@dataclass
class PatientSlices:
    """One patient's slices, ready to store.

    Attributes:
        header: the `Patient` without its volumes (identity and folder, for duplicate checks).
        images: ``(N, size, size)`` float32 in [0, 1].
        labels: ``(N, size, size)`` uint8.
        vessels: ``(N,)`` vessel name per slice.
        positions: ``(N,)`` index along the vessel.
        centers_mm: ``(N, 3)`` LPS mm of each slice's centre.
        spacing_mm: pixel spacing of the stored slices (after resizing).
        skipped_sections: cross-sections dropped because they left the volume.
        has_foreground: whether the label volume holds any class > 0.
        centerline_source: `GIVEN` (the patient's centerline file) or `DERIVED` (`derive_centerlines`).
    """

    header: Patient
    images: np.ndarray
    labels: np.ndarray
    vessels: np.ndarray
    positions: np.ndarray
    centers_mm: np.ndarray
    spacing_mm: float
    skipped_sections: int
    has_foreground: bool
    centerline_source: str = GIVEN


@dataclass
class Summary:
    """What `preprocess` wrote (also stored as ``summary.json``); no identifying value.

    Attributes:
        patients_per_split, slices_per_split: counts per split name.
        strata_per_split: split -> plaque stratum (`plaque_stratum`) -> patients.
        patients_with_class: split -> foreground class name -> patients whose slices hold that class (the
            statistical power of each split for each class).
        skipped_patients: reason (``no_foreground``, ``no_slices_in_volume``) -> count.
        skipped_sections: cross-sections dropped because their crop left the volume.
        derived_centerline_patients: patients whose centerlines were derived from their labels.
        class_fractions: class name -> fraction of all stored pixels.
        window_hu, crop_px, size, step_mm: the settings used.
        pseudonym_key: ``"env"`` or ``"params"``: where the pseudonym key came from.
    """

    patients_per_split: dict[str, int]
    strata_per_split: dict[str, dict[str, int]]
    patients_with_class: dict[str, dict[str, int]]
    slices_per_split: dict[str, int]
    skipped_patients: dict[str, int]
    skipped_sections: int
    derived_centerline_patients: int
    class_fractions: dict[str, float]
    window_hu: list[float]
    crop_px: int
    size: int
    step_mm: float
    pseudonym_key: str


def slice_patient(folder: Path, cfg: dict[str, Any]) -> PatientSlices:
    """Load one patient and cut its cross-sections along its centerlines, derived from its labels when it has none.

    Args:
        folder: the raw patient folder.
        cfg: the resolved ``preprocess`` section.

    Raises:
        InputError: from `load_patient` or `derive_centerlines`, naming the offending file.
    """
    patient = load_patient(folder, cfg["label_map"])
    has_fg, source = bool(patient.labels.any()), GIVEN
    if has_fg and not patient.centerlines:
        patient.centerlines = derive_centerlines(patient.labels, patient.geometry, cfg["step_mm"], folder)
        source = DERIVED
    header = dataclasses.replace(patient, hu=np.zeros((0, 0, 0), np.float32), labels=np.zeros((0, 0, 0), np.uint8))
    crop, size = cfg["crop_px"], cfg["size"]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = [
        (  # an empty start part
            np.zeros((0, crop, crop), np.float32),
            np.zeros((0, crop, crop), np.uint8),
            np.zeros(0, dtype=object),
            np.zeros(0, np.int64),
            np.zeros((0, 3)),
        )
    ]
    skipped, spacing = 0, slicing.native_spacing(patient.geometry)
    if has_fg:
        for name in sorted(patient.centerlines):
            line = patient.centerlines[name]
            img, lab, spacing, kept = slicing.cross_sections(
                patient.hu, patient.labels, patient.geometry, line, crop, cfg["step_mm"]
            )
            centers = slicing.resample_centerline(line, cfg["step_mm"])
            skipped += len(centers) - len(kept)
            parts.append((img, lab, np.full(len(kept), name, dtype=object), kept, centers[kept]))
    images, vessels, positions, centers_mm = (np.concatenate([p[i] for p in parts]) for i in (0, 2, 3, 4))
    images, labels = slicing.resize(
        slicing.window(images, cfg["window_hu"]), np.concatenate([p[1] for p in parts]), size
    )
    return PatientSlices(
        header=header,
        images=images,
        labels=labels,
        vessels=vessels,
        positions=positions,
        centers_mm=centers_mm,
        spacing_mm=spacing * crop / size,
        skipped_sections=skipped,
        has_foreground=has_fg,
        centerline_source=source,
    )


def _slice_or_error(folder: Path, cfg: dict[str, Any]) -> PatientSlices | tuple[str, str]:
    """`slice_patient`, with an InputError returned as ``(where, problem)`` (it does not pickle)."""
    try:
        return slice_patient(folder, cfg)
    except InputError as e:
        return e.where, e.problem


def _run_all(folders: list[Path], cfg: dict[str, Any], processes: int) -> list[PatientSlices | tuple[str, str]]:
    """`_slice_or_error` for every folder, in order; in a process pool when ``processes > 1``."""
    bar = dict(total=len(folders), desc="preprocess", unit="patient")
    if processes <= 1 or len(folders) == 1:
        return [r for r in progress((_slice_or_error(f, cfg) for f in folders), **bar)]
    with ProcessPoolExecutor(max_workers=min(processes, len(folders))) as pool:
        return list(progress(pool.map(_slice_or_error, folders, [cfg] * len(folders)), **bar))


def _first_error(results: Iterable[PatientSlices | tuple[str, str]]) -> None:
    """Raise the first returned error, counting the others in its message."""
    errors = [r for r in results if isinstance(r, tuple)]
    if errors:
        where, problem = errors[0]
        more = f" (and {len(errors) - 1} more invalid patient(s))" if len(errors) > 1 else ""
        raise InputError(where, problem + more)


def _check_out(raw: Path, out: Path) -> None:
    """``out`` must be a folder (or absent) outside ``raw``."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    if out.resolve() == raw.resolve() or raw.resolve() in out.resolve().parents:
        raise InputError(out, "output folder must not lie inside the raw data folder")


def _manifest(kept: list[tuple[str, str, PatientSlices]]) -> pd.DataFrame:
    """One row per slice of ``kept`` = ``[(pseudonym, split, slices), ...]`` in storage order: `MANIFEST_COLUMNS`,
    then `CENTERLINE_COLUMN` (`GIVEN` or `DERIVED`)."""
    frames = []
    for name, split, s in kept:
        counts = np.stack([(s.labels == c).sum(axis=(1, 2)) for c in range(NUM_CLASSES)], axis=1)
        frame = pd.DataFrame(
            {
                "patient": name,
                "split": split,
                "vessel": s.vessels.astype(str),
                "slice": s.positions.astype(np.int64),
                "spacing_mm": s.spacing_mm,
                "center_x": s.centers_mm[:, 0],
                "center_y": s.centers_mm[:, 1],
                "center_z": s.centers_mm[:, 2],
            }
        )
        for c in range(NUM_CLASSES):
            frame[f"count_{c}"] = counts[:, c].astype(np.int64)
        frames.append(frame)
    manifest = pd.concat(frames, ignore_index=True)
    manifest.insert(0, "index", np.arange(len(manifest), dtype=np.int64))
    manifest[CENTERLINE_COLUMN] = np.repeat(
        [s.centerline_source for _, _, s in kept], [len(s.images) for _, _, s in kept]
    )
    return manifest[[*MANIFEST_COLUMNS, CENTERLINE_COLUMN]]


def _write(out: Path, kept: list[tuple[str, str, PatientSlices]], manifest: pd.DataFrame, summary: Summary) -> None:
    """Write everything into ``out`` at once (`atomic_folder`): no leftovers on failure."""
    with atomic_folder(out) as tmp:
        shape = (len(manifest), *kept[0][2].images.shape[1:])
        images = np.lib.format.open_memmap(tmp / IMAGES_FILE, mode="w+", dtype=np.float32, shape=shape)
        labels = np.lib.format.open_memmap(tmp / LABELS_FILE, mode="w+", dtype=np.uint8, shape=shape)
        row = 0
        for _, _, s in kept:
            images[row : row + len(s.images)] = s.images
            labels[row : row + len(s.labels)] = s.labels
            row += len(s.images)
        images.flush()
        labels.flush()
        del images, labels
        manifest.to_csv(tmp / MANIFEST_FILE, index=False, float_format="%.8g")
        (tmp / SUMMARY_FILE).write_text(json.dumps(dataclasses.asdict(summary), indent=2) + "\n")
        for name, _, s in kept:
            if s.centerline_source == DERIVED:
                write_curves(tmp / CENTERLINES_DIR / name, s.header.centerlines)


def plaque_stratum(labels: np.ndarray) -> str:
    """The split stratum of a patient's slices ``(N, H, W)``: which plaque classes it holds."""
    present = np.isin([CALCIFIED, NONCALCIFIED], labels)
    return {
        (False, False): "no_plaque",
        (True, False): "calcified",
        (False, True): "non_calcified",
        (True, True): "mixed",
    }[(bool(present[0]), bool(present[1]))]


def _split_subjects(
    usable: list[tuple[str, PatientSlices]], subject_of: dict[str, str], cfg: dict[str, Any]
) -> dict[str, str]:
    """Scan name -> split, dealing subjects (all their scans together) stratified by the plaque they hold."""
    labels: dict[str, list[np.ndarray]] = {}
    for name, s in usable:
        labels.setdefault(subject_of[name], []).append(s.labels)
    strata = {subject: plaque_stratum(np.concatenate(parts)) for subject, parts in labels.items()}
    by_subject = split_patients(list(strata), cfg["split"], cfg["split_seed"], strata)
    return {name: by_subject[subject_of[name]] for name, _ in usable}


def preprocess(raw: Path, out: Path, cfg: dict[str, Any], processes: int | str) -> Summary:
    """Slice every patient of ``raw`` and write the dataset to ``out`` (see the module docstring).

    Every patient is loaded and checked before anything is written; patients without foreground
    (or without any cross-section inside the volume) are skipped with a warning and counted.

    Args:
        raw: the raw layout folder (see `plaque.io`).
        out: output folder; replaced atomically when it exists.
        cfg: the resolved ``preprocess`` section of params.
        processes: worker processes for loading and slicing, or ``"auto"`` for one per CPU core
            (`plaque.config.worker_processes`); the dataset comes out the same for any count.

    Returns:
        The `Summary` written to ``summary.json``.

    Raises:
        InputError: the first invalid input (file and problem), duplicates, or too few patients
            to fill the splits; nothing is written then.
    """
    raw, out = Path(raw), Path(out)
    _check_out(raw, out)
    folders = list_patients(raw)
    key, key_source = pseudonym_key(cfg["pseudonym_salt"], is_phantom(raw))
    processes = worker_processes(processes)
    log.info("preprocessing %d patient(s) with %d process(es)", len(folders), processes)
    results = _run_all(folders, cfg, processes)
    _first_error(results)
    slices: list[PatientSlices] = [r for r in results if isinstance(r, PatientSlices)]
    check_unique([s.header for s in slices])
    subjects: list[str] = []
    for s in slices:
        ident = s.header.patient_id or s.header.study_uid
        if not ident:
            raise InputError(
                s.header.folder / DICOM_DIR, "neither PatientID nor StudyInstanceUID is set: cannot derive a pseudonym"
            )
        subjects.append(pseudonym(ident, key))
    names = scan_names(subjects, [s.header.study_date for s in slices])
    subject_of = dict(zip(names, subjects))
    skipped = {"no_foreground": 0, "no_slices_in_volume": 0}
    usable = []
    for name, s in zip(names, slices):
        if not s.has_foreground:
            log.warning("patient %s: no foreground in the label volume; skipped", name)
            skipped["no_foreground"] += 1
        elif len(s.images) == 0:
            log.warning("patient %s: every cross-section leaves the volume; skipped", name)
            skipped["no_slices_in_volume"] += 1
        else:
            usable.append((name, s))
    assignment = _split_subjects(usable, subject_of, cfg)
    strata = {name: plaque_stratum(s.labels) for name, s in usable}
    order = list(cfg["split"])
    kept = sorted(((name, assignment[name], s) for name, s in usable), key=lambda x: (order.index(x[1]), x[0]))
    manifest = _manifest(kept)
    pixels = manifest[[f"count_{c}" for c in range(NUM_CLASSES)]].to_numpy().sum(axis=0)
    summary = Summary(
        patients_per_split={split: sum(1 for _, sp, _ in kept if sp == split) for split in order},
        strata_per_split={
            split: {
                k: sum(1 for n, sp, _ in kept if sp == split and strata[n] == k) for k in sorted(set(strata.values()))
            }
            for split in order
        },
        patients_with_class={
            split: {
                CLASS_NAMES[c]: sum(1 for _, sp, sl in kept if sp == split and bool((sl.labels == c).any()))
                for c in FOREGROUND
            }
            for split in order
        },
        slices_per_split={split: int((manifest["split"] == split).sum()) for split in order},
        skipped_patients=skipped,
        skipped_sections=sum(s.skipped_sections for s in slices),
        derived_centerline_patients=sum(1 for _, _, s in kept if s.centerline_source == DERIVED),
        class_fractions={CLASS_NAMES[c]: float(pixels[c] / pixels.sum()) for c in range(NUM_CLASSES)},
        window_hu=[float(v) for v in cfg["window_hu"]],
        crop_px=int(cfg["crop_px"]),
        size=int(cfg["size"]),
        step_mm=float(cfg["step_mm"]),
        pseudonym_key=key_source,
    )
    _write(out, kept, manifest, summary)
    log.info(
        "wrote %d slices of %d patient(s): %s",
        len(manifest),
        len(kept),
        ", ".join(f"{k} {v}" for k, v in summary.slices_per_split.items()),
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints ``error: <file>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        **command_line("plaque.data.preprocess", "plaque-preprocess", "--raw data/cohort --out data/processed"),
    )
    parser.add_argument("--raw", type=Path, required=True, help="raw data folder (one subfolder per patient)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    add_config_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def run() -> None:
        cfg = load_config(args.params, args.profile)["preprocess"]
        preprocess(args.raw, args.out, cfg, cfg["processes"])

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
