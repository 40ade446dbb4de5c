"""Segmenting whole scans: time per patient, and the mapped-back voxel Dice against the evaluator's cross-section Dice.

    python -m benchmarks.segment [--checkpoint models/stage2/ours/best.pt] [--raw data/raw]
                                 [--data data/processed] [--per-patient reports/tables/ours_per_patient.csv]
                                 [--params params.yaml] [--patients N] [--threads 2] [--device cpu]
                                 [--warmup 0] [--json results/bench/segment.json]

For each test patient of ``--data`` (at most ``--patients``), runs `plaque.segment.run.segment` on its raw
folder as a user would (read the series, cut, predict, map back, write NIfTI, DICOM-SEG and the overlay) and
times it (after ``--warmup`` untimed runs on the first patient: on a GPU the first run also pays CUDA's
start-up and kernel choices). Then scores the written label volume against the patient's ``label.nii.gz`` (voxel Dice per class,
macro over the classes present in either) and sets it beside the cross-section Dice the evaluator reported
for the same patient (``--per-patient``, `plaque.eval`). Targets, judged for a ``demo`` profile model only: at
most `TARGET_SECONDS` per patient (2 CPU threads); the mean voxel macro Dice within `TARGET_GAP` of the mean
cross-section macro Dice.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from benchmarks.common import machine_info, print_patient_figures
from plaque.atomic import write_json_atomic
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.config import load_config
from plaque.data.processed import load_processed
from plaque.data.pseudonym import pseudonym, pseudonym_key
from plaque.inference import load_predictor
from plaque.io.dicom import read_series
from plaque.io.patient import DICOM_DIR, LABEL_FILE, is_phantom, list_patients
from plaque.paths import repo_root
from plaque.segment.run import LABELS_FILE, segment

TARGET_SECONDS = 20.0
TARGET_GAP = 0.05


def voxel_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per foreground class of two ``(Z, Y, X)`` label volumes (NaN where a class is in neither) and
    ``macro`` (their mean over the classes present in either)."""
    out = {}
    for c in FOREGROUND:
        a, b = pred == c, truth == c
        total = a.sum() + b.sum()
        out[CLASS_NAMES[c]] = float(2 * (a & b).sum() / total) if total else float("nan")
    out["macro"] = float(np.nanmean([out[CLASS_NAMES[c]] for c in FOREGROUND]))
    return out


def test_folders(raw: Path, data: Path, salt: str) -> dict[str, Path]:
    """Pseudonym -> raw folder of every test patient of the processed dataset ``data``."""
    test = set(load_processed(data).manifest.query("split == 'test'")["patient"])
    key, _ = pseudonym_key(salt, is_phantom(raw))
    found = {}
    for folder in list_patients(raw):
        identity = read_series(folder / DICOM_DIR).identity
        name = pseudonym(identity["PatientID"] or identity["StudyInstanceUID"], key)
        if name in test:
            found[name] = folder
    return dict(sorted(found.items()))


def targets(table: pd.DataFrame, mean: pd.Series) -> dict:
    """The demo model's targets: the slowest patient's seconds, and the voxel against the cross-section macro Dice."""
    return {
        "seconds_per_patient": {
            "value": float(table["seconds"].max()),
            "limit": TARGET_SECONDS,
            "ok": bool(table["seconds"].max() <= TARGET_SECONDS),
        },
        "macro_gap": {
            "value": float(mean["voxel_macro"] - mean["section_macro"]),
            "limit": TARGET_GAP,
            "ok": bool(abs(mean["voxel_macro"] - mean["section_macro"]) <= TARGET_GAP),
        },
    }


def run(args: argparse.Namespace) -> dict:
    """Segment and score; returns the figures."""
    torch.set_num_threads(args.threads)
    cfg = load_config(args.params)
    predictor = load_predictor(args.checkpoint, args.device)
    folders = test_folders(args.raw, args.data, cfg["preprocess"]["pseudonym_salt"])
    names = list(folders)[: args.patients]
    per_patient = pd.read_csv(args.per_patient).set_index("patient")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            scans = Path(tmp) / "in" / name
            scans.mkdir(parents=True)
            (scans / folders[name].name).symlink_to(folders[name].resolve())
        for run_index in range(args.warmup if names else 0):
            segment(predictor, Path(tmp) / "in" / names[0], Path(tmp) / "warmup" / str(run_index))
        for name in names:
            scans = Path(tmp) / "in" / name
            t0 = time.perf_counter()
            segment(predictor, scans, Path(tmp) / "out" / name)
            seconds = time.perf_counter() - t0
            pred = np.asarray(nib.load(Path(tmp) / "out" / name / "scan_001" / LABELS_FILE).dataobj)
            truth = np.asarray(nib.load(folders[name] / LABEL_FILE).dataobj)
            dice = voxel_dice(pred, truth)
            section = per_patient.loc[name]
            rows.append(
                {
                    "patient": name,
                    "seconds": seconds,
                    **{f"voxel_{k}": v for k, v in dice.items()},
                    "section_macro": float(section["macro_dice"]),
                    **{f"section_{CLASS_NAMES[c]}": float(section[f"dice_{CLASS_NAMES[c]}"]) for c in FOREGROUND},
                }
            )
    table = pd.DataFrame(rows)
    mean = table.drop(columns="patient").mean(numeric_only=True)
    return {
        "machine": machine_info(torch.device(args.device), repo_root()),
        "method": predictor.method,
        "profile": cfg["profile"],
        "threads": args.threads,
        "warmup": args.warmup,
        "patients": table.to_dict(orient="records"),
        "mean": mean.to_dict(),
        "targets": targets(table, mean) if cfg["profile"] == "demo" else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segment", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/stage2/ours/best.pt"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--data", type=Path, default=Path("data/processed"))
    parser.add_argument("--per-patient", type=Path, default=Path("reports/tables/ours_per_patient.csv"))
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs on the first patient first")
    parser.add_argument("--json", type=Path, default=Path("results/bench/segment.json"))
    args = parser.parse_args(argv)
    figures = run(args)
    columns = [
        "patient",
        "seconds",
        "voxel_macro",
        "section_macro",
        *(f"{kind}_{CLASS_NAMES[c]}" for c in FOREGROUND for kind in ("voxel", "section")),
    ]
    machine = figures["machine"]
    header = (
        f"{machine['cpu']}, torch {machine.get('torch')}, load {machine['load_average_1min']:.1f} | "
        f"{figures['method']} ({figures['profile']}), {args.threads} threads"
    )
    print_patient_figures(header, figures, columns, signed=True)
    write_json_atomic(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
