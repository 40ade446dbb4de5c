"""Write a phantom cohort in the raw layout, in parallel and atomically.

Layout (``case_NNN`` folder names, never the PatientID)::

    OUT/case_000/dicom/IM00001.dcm ...   one CT series (int16 + rescale, fictitious patient tags)
    OUT/case_000/label.nii.gz            labels on the same grid
    OUT/case_000/centerline.json         {"LAD": [[x, y, z], ...]} LPS mm, proximal to distal
    OUT/cohort.json                      the sampled truth of every case (no identifying tags)
    OUT/.plaque-phantom                  marks the folder as a phantom cohort (`plaque.io.patient.is_phantom`)

The cohort is written into a hidden sibling folder and renamed into place at the end (replacing an
existing ``OUT``), so an interrupted or failed run never leaves a partial cohort behind. An existing ``OUT``
is replaced only when it is a phantom cohort (or empty): a user's own scans are never written over.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from plaque.atomic import atomic_folder
from plaque.config import worker_processes
from plaque.data.phantom import case as _case
from plaque.errors import InputError
from plaque.io.dicom import write_series
from plaque.io.labels import write_centerlines, write_labels
from plaque.io.patient import CENTERLINE_FILE, DICOM_DIR, LABEL_FILE, PHANTOM_MARKER, is_phantom
from plaque.progress import progress

COHORT_FILE = "cohort.json"


def write_case(root: Path, index: int, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Render patient ``index`` and write it under ``root/case_NNN``; returns its truth summary."""
    c = _case.generate_case(index, seed, cfg)
    folder = root / c.name
    write_series(folder / DICOM_DIR, c.hu, c.geometry, c.tags, uid_seed=f"plaque-phantom/{seed}/{index}")
    write_labels(folder / LABEL_FILE, c.labels, c.geometry)
    write_centerlines(folder / CENTERLINE_FILE, c.centerlines)
    return {"case": c.name, **c.truth}


def _write_case_job(args: tuple[Path, int, int, dict[str, Any]]) -> dict[str, Any]:
    return write_case(*args)


def generate_cohort(
    out: Path, patients: int, seed: int, cfg: dict[str, Any], processes: int | str = 1
) -> list[dict[str, Any]]:
    """Generate ``patients`` phantom patients into ``out`` (replaced atomically).

    Args:
        out: cohort folder (raw layout).
        patients: number of patients (indices ``0 .. patients - 1``).
        seed: cohort seed.
        cfg: the resolved ``phantom`` config section.
        processes: worker processes, or ``"auto"`` for one per CPU core (`plaque.config.worker_processes`); 1
            renders in this process. The patients come out the same for any count.

    Returns:
        Each case's truth summary, in index order (also written to ``out/cohort.json``).

    Raises:
        InputError: non-positive ``patients``, ``processes`` neither a positive integer nor ``"auto"``, or
            ``out`` is an existing file or a non-empty folder that is not a phantom cohort.
    """
    out = Path(out)
    processes = worker_processes(processes)
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise InputError("patients", f"expected a positive integer, got {patients!r}")
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_phantom(out):
        raise InputError(
            out,
            f"holds data the phantom generator did not write (no {PHANTOM_MARKER}); refusing to "
            "replace it: choose another folder, or set data.raw to it in params.yaml",
        )
    with atomic_folder(out) as tmp:
        jobs = [(tmp, i, seed, cfg) for i in range(patients)]
        results: dict[int, dict[str, Any]] = {}
        with progress(total=patients, desc="phantom", unit="patient") as bar:
            if processes == 1 or patients == 1:
                for job in jobs:
                    results[job[1]] = _write_case_job(job)
                    bar.update()
            else:
                pool = ProcessPoolExecutor(max_workers=min(processes, patients))
                try:
                    futures = {pool.submit(_write_case_job, job): job[1] for job in jobs}
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.update()
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        cases = [results[i] for i in range(patients)]
        summary = {
            "generator": "plaque.data.phantom",
            "seed": seed,
            "patients": patients,
            "config": {k: v for k, v in cfg.items() if k != "processes"},  # what was drawn, not how fast
            "cases": cases,
        }
        (tmp / COHORT_FILE).write_text(json.dumps(summary, indent=1, default=str))
        (tmp / PHANTOM_MARKER).write_text("written by plaque.data.phantom; replaced by its next run\n")
    return cases
