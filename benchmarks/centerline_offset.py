"""How a plaque model copes with a centerline that misses the vessel's centre.

    python -m benchmarks.centerline_offset [--checkpoint models/stage2/ours/best.pt] [--patients 10] [--seed 4242]
                                           [--offsets 0,0.25,0.5,1.0] [--profile P] [--threads 2] [--json results/bench/centerline_offset.json]

Generates ``--patients`` phantom patients of ``--seed`` (a seed the pipeline does not use) and segments each scan
(`plaque.segment.volume`: cut, predict, map back to voxels) along its true centerlines moved sideways by each
offset: every point moves ``offset`` mm along one axis of its cross-section's plane (`offset_centerline`), once
in each of the four directions ±u, ±v. Reported per offset: the voxel Dice per class against the label volume
(per patient the mean over the directions, then the mean over the patients where the class is in truth or
prediction, as the evaluator counts: a class predicted in a patient without it scores 0 there), and the false
calcified plaque, predicted calcified voxels outside the true calcified ones (mm³, mean over all patients).

Derived centerlines (`plaque.data.centerlines`, and the vessel model's in `plaque.segment.vessels`) lie about
0.2-0.4 mm from the true ones, up to 1 mm (`python -m benchmarks.no_centerline`): a model fit for use without a
centerline keeps its Dice and adds no plaque over that range.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import add_unseen_cohort_options, format_table, machine_info, unseen_cohort
from benchmarks.segment import voxel_dice
from plaque.atomic import write_json_atomic
from plaque.classes import CALCIFIED, CLASS_NAMES, FOREGROUND
from plaque.cli import add_config_options
from plaque.config import load_config
from plaque.data.slicing import resample_centerline, transport_frames
from plaque.inference import load_predictor
from plaque.io.patient import load_patient
from plaque.paths import repo_root
from plaque.progress import progress
from plaque.segment.volume import cut_and_predict, to_voxels

DIRECTIONS = ("+u", "-u", "+v", "-v")
DENSE_MM = 0.25  # the moved centerline keeps a point every DENSE_MM


def offset_centerline(points_mm: np.ndarray, offset_mm: float, direction: str) -> np.ndarray:
    """``points_mm`` ``(P, 3)`` LPS mm, resampled every `DENSE_MM` and moved ``offset_mm`` along the cross-section
    axis ``direction`` (one of `DIRECTIONS`; `plaque.data.slicing.transport_frames`): ``(Q, 3)``."""
    dense = resample_centerline(points_mm, DENSE_MM)
    _, u, v = transport_frames(dense, DENSE_MM)
    axis = {"u": u, "v": v}[direction[1]]
    sign = 1.0 if direction[0] == "+" else -1.0
    return dense + sign * offset_mm * axis


def offsets_mm(text: str) -> list[float]:
    """``--offsets``: comma-separated distances in mm, each at least 0."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated millimetres, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"offsets are distances (mm, at least 0), got {text!r}")
    return values


def run(args: argparse.Namespace) -> dict:
    """Generate, segment at every offset and score; returns the figures."""
    torch.set_num_threads(args.threads)
    cfg = load_config(args.params, args.profile)
    device = torch.device(args.device)
    predictor = load_predictor(args.checkpoint, device)
    rows = []
    with unseen_cohort(args.patients, args.seed, cfg["phantom"], "centerline-offset-") as (_, folders):
        for folder in progress(folders, desc="centerline offset", unit="patient"):
            patient = load_patient(folder, cfg["preprocess"]["label_map"])
            voxel_mm3 = float(np.prod(patient.geometry.spacing))
            outside = patient.labels != CALCIFIED
            for offset in args.offsets:
                for direction in DIRECTIONS if offset > 0 else DIRECTIONS[:1]:
                    lines = {k: offset_centerline(c, offset, direction) for k, c in patient.centerlines.items()}
                    labels, _ = to_voxels(
                        patient.geometry, cut_and_predict(predictor, patient.hu, patient.geometry, lines)
                    )
                    row: dict[str, object] = {"patient": folder.name, "offset_mm": offset, "direction": direction}
                    row.update(voxel_dice(labels, patient.labels))
                    row["false_calcified_mm3"] = float(((labels == CALCIFIED) & outside).sum()) * voxel_mm3
                    rows.append(row)
    table = pd.DataFrame(rows)
    per_patient = table.drop(columns="direction").groupby(["offset_mm", "patient"]).mean()
    summary = per_patient.groupby("offset_mm").mean().reset_index()
    return {
        "machine": machine_info(device, repo_root()),
        "method": predictor.method,
        "checkpoint": str(args.checkpoint),
        "profile": cfg["profile"],
        "seed": args.seed,
        "patients": args.patients,
        "rows": table.to_dict(orient="records"),
        "summary": summary.to_dict(orient="records"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.centerline_offset", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/stage2/ours/best.pt"))
    add_config_options(parser, "profile whose phantom is generated (default: the file's `profile` key)")
    add_unseen_cohort_options(parser)
    parser.add_argument("--offsets", type=offsets_mm, default=[0.0, 0.25, 0.5, 1.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=Path("results/bench/centerline_offset.json"))
    args = parser.parse_args(argv)
    figures = run(args)
    classes = [CLASS_NAMES[c] for c in FOREGROUND]
    machine = figures["machine"]
    print(
        f"{machine['cpu']}, torch {machine.get('torch')} | {figures['method']} ({figures['profile']}) from "
        f"{args.checkpoint}, {args.patients} phantom patients of seed {args.seed}, {args.threads} threads"
    )
    headers = ["offset (mm)", *classes, "macro", "false calcified (mm³ a patient)"]
    print(
        format_table(
            headers,
            [
                [
                    f"{r['offset_mm']:.2f}",
                    *(f"{r[c]:.3f}" for c in [*classes, "macro"]),
                    f"{r['false_calcified_mm3']:.1f}",
                ]
                for r in figures["summary"]
            ],
        )
    )
    write_json_atomic(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
