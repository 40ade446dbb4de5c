"""Centerlines derived from labels against the phantom generator's true centerlines.

    python -m benchmarks.centerlines [--patients 10] [--seed 4242] [--step-mm 0.5] [--profile NAME]

Generates ``--patients`` phantom patients of ``--seed`` (a seed the pipeline does not use) into a temporary
folder, as ``python -m plaque.data.phantom`` does, derives every patient's centerlines from its label volume
(`plaque.data.centerlines.derive_centerlines`) and compares each true vessel with the derived branch that
overlaps it most:

- mean distance (mm): CAT08's average distance, the mean over the true points of their distance to the derived
  line and over the derived points of their distance to the true line;
- overlap: CAT08's share of true centerline points within `OVERLAP_MM` of the derived line;
- ostium: whether the derived branch starts at the true proximal end (nearer to it than to the distal end).

Prints one row per vessel, the overall figures, and the targets (`TARGET_MEAN_MM`, `TARGET_OVERLAP`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import add_unseen_cohort_options, format_table, unseen_cohort
from plaque.config import load_config
from plaque.data.centerline_scores import best_match
from plaque.data.centerlines import derive_centerlines
from plaque.io.patient import LABEL_FILE, load_patient

TARGET_MEAN_MM = 0.5
TARGET_OVERLAP = 0.95


def score_patient(folder: Path, label_map: dict[int, int], step_mm: float) -> list[dict[str, object]]:
    """One row per true vessel of a phantom patient: the derived branch that overlaps it most, and the figures."""
    patient = load_patient(folder, label_map)
    derived = derive_centerlines(patient.labels, patient.geometry, step_mm, folder / LABEL_FILE)
    rows = []
    for vessel, true_mm in sorted(patient.centerlines.items()):
        best, scores = best_match(true_mm, derived)
        rows.append({"patient": folder.name, "vessel": vessel, "branches": len(derived), "branch": best, **scores})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.centerlines", description=__doc__.splitlines()[0])
    add_unseen_cohort_options(parser)
    parser.add_argument("--step-mm", type=float, default=None, help="point spacing (default: preprocess.step_mm)")
    parser.add_argument("--profile", default=None, help="params profile (phantom and preprocess settings)")
    args = parser.parse_args(argv)
    cfg = load_config(None, args.profile)
    step_mm = args.step_mm or float(cfg["preprocess"]["step_mm"])
    with unseen_cohort(args.patients, args.seed, cfg["phantom"], "centerlines-") as (_, folders):
        rows = [r for f in folders for r in score_patient(f, cfg["preprocess"]["label_map"], step_mm)]
    headers = ["patient", "vessel", "branches", "branch", "mean_mm", "max_mm", "overlap", "ostium"]
    print(f"centerlines derived from labels: {args.patients} phantom patients, seed {args.seed}, step {step_mm:g} mm")
    print(format_table(headers, [[_fmt(r[h]) for h in headers] for r in rows]))
    mean_mm = float(np.mean([r["mean_mm"] for r in rows]))
    overlap = float(np.mean([r["overlap"] for r in rows]))
    ostia = int(sum(r["ostium"] for r in rows))
    print(
        f"\noverall: mean distance {mean_mm:.3f} mm, overlap {overlap:.3f} (lowest {min(r['overlap'] for r in rows):.3f}), ostium right in {ostia}/{len(rows)}"
    )
    print(f"target mean distance <= {TARGET_MEAN_MM} mm: {'ok' if mean_mm <= TARGET_MEAN_MM else 'MISSED'}")
    print(f"target overlap >= {TARGET_OVERLAP}: {'ok' if overlap >= TARGET_OVERLAP else 'MISSED'}")
    return 0


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
