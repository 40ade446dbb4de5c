"""Train the vessel model on the labelled training patients and check it on the validation patients.

    python -m plaque.train.vessel --raw DIR --processed DIR --out DIR --results DIR [--params FILE] [--profile NAME]

Training: ``vessel.steps`` AdamW steps (peak ``vessel.lr``, cosine decay to 0) of ``vessel.batch_size``
random ``vessel.patch``³ crops of the training scans on the model's isotropic grid, a share
``vessel.on_vessel`` of them centred on a vessel voxel; MONAI's Dice + cross-entropy loss. Random flips
along the three axes augment the crops. One process, on the CPU or one GPU, in ``train.precision``
(`plaque.precision`: ``auto`` is bf16 where the CPU or GPU has it).

Validation, on each validation patient's whole scan, back on its own voxel grid:

- voxel Dice of the vessel (wall, lumen and plaque) against its mask (`plaque.models.vessel.predict_vessel`:
  thresholded at ``vessel.threshold``, holes filled, pieces under ``vessel.min_piece_fraction`` dropped);
- the centerlines derived from that mask (`plaque.data.centerlines`) against the patient's given ones
  (`plaque.data.centerline_scores`): overlap, the share of vessels found (`FOUND_OVERLAP`), the mean
  distance of those found, and the length of stray derived lines, which follow no given one.

Writes ``OUT/best.pt`` (`plaque.models.vessel.vessel_record`: the weights, settings and validation), its
model card ``OUT/model_card.md``, ``RESULTS/metrics.json`` (the validation figures) and
``RESULTS/val_patients.csv`` (one row per validation patient and vessel).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceCELoss

from plaque.atomic import atomic_folder, write_json_atomic
from plaque.checkpoint import save_atomic
from plaque.cli import add_config_options, add_device_option, resolve_device, run_cli
from plaque.config import PHANTOM, load_config
from plaque.data.centerline_scores import best_match, stray_length
from plaque.data.centerlines import derive_centerlines, vessel_mask
from plaque.data.vessel import VesselCase, load_cases, sample_patch
from plaque.errors import InputError
from plaque.intended_use import INTENDED_USE, PHANTOM_CAVEAT
from plaque.models.vessel import build_vessel_net, predict_vessel, vessel_record
from plaque.precision import autocast, grad_scaler, resolve_precision
from plaque.progress import progress
from plaque.schedule import lr_factor

FOUND_OVERLAP = 0.5  # a given vessel counts as found when the derived line covers at least half of it
BEST_FILE, CARD_FILE, METRICS_FILE, PATIENTS_FILE = "best.pt", "model_card.md", "metrics.json", "val_patients.csv"

log = logging.getLogger("plaque.train.vessel")


def train_vessel_net(
    cases: list[VesselCase], settings: dict[str, Any], device: torch.device, precision: str
) -> torch.nn.Module:
    """A vessel network trained on ``cases`` (the module docstring), seeded by ``settings["seed"]``, under
    ``precision`` (resolved: bf16, fp16 or fp32)."""
    if not cases:
        raise InputError("vessel training", "no training patient; check the processed manifest's splits")
    torch.manual_seed(int(settings["seed"]))
    rng = np.random.default_rng(int(settings["seed"]))
    net = build_vessel_net(settings["channels"], settings["res_units"]).to(device)
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"])
    )
    steps, batch, patch = int(settings["steps"]), int(settings["batch_size"]), int(settings["patch"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(s, steps, 0.0, "cosine"))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    scaler = grad_scaler(device, precision)
    net.train()
    bar = progress(range(steps), desc="vessel model", unit="step")
    for _ in bar:
        crops = [
            sample_patch(cases[rng.integers(len(cases))], patch, bool(rng.random() < settings["on_vessel"]), rng)
            for _ in range(batch)
        ]
        flips = rng.random((batch, 3)) < 0.5
        x = np.stack([_flip(c[0], f) for c, f in zip(crops, flips)])[:, None]
        y = np.stack([_flip(c[1], f) for c, f in zip(crops, flips)])[:, None]
        with autocast(device, precision):
            logits = net(torch.from_numpy(x).to(device))
        loss = loss_fn(logits.float(), torch.from_numpy(y.astype(np.int64)).to(device))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return net.eval()


def _flip(volume: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``volume`` ``(D, H, W)`` mirrored along the axes where ``axes`` ``(3,)`` is true (a contiguous copy)."""
    flipped = np.flip(volume, axis=tuple(int(a) for a in np.flatnonzero(axes))) if axes.any() else volume
    return np.ascontiguousarray(flipped)


def validate(
    net: torch.nn.Module, cases: list[VesselCase], settings: dict[str, Any], step_mm: float, device: torch.device
) -> pd.DataFrame:
    """One row per validation case: voxel Dice of the vessel and the derived centerlines' figures (the module
    docstring); a case whose mask yields no centerline counts its vessels as not found."""
    rows = []
    for case in progress(cases, desc="validate vessel model", unit="scan"):
        t0 = time.perf_counter()
        mask = predict_vessel(net, case.image, case.geometry.shape, settings, device)
        truth = vessel_mask(case.labels)
        dice = 2.0 * float((mask & truth).sum()) / max(1.0, float(mask.sum() + truth.sum()))
        try:
            derived = derive_centerlines(mask.astype(np.uint8), case.geometry, step_mm, case.name)
        except InputError as e:
            log.warning("%s: no centerline from the predicted mask (%s)", case.name, e)
            derived = {}
        seconds = time.perf_counter() - t0
        stray = stray_length(list(case.centerlines.values()), derived) if case.centerlines else float("nan")
        for vessel, true_mm in case.centerlines.items():
            _, score = best_match(true_mm, derived)
            rows.append(
                {
                    "patient": case.name,
                    "vessel": vessel,
                    "dice": dice,
                    "branches": len(derived),
                    "stray_mm": stray,
                    "seconds": seconds,
                    **score,
                }
            )
        if not case.centerlines:
            rows.append(
                {"patient": case.name, "vessel": "", "dice": dice, "branches": len(derived), "seconds": seconds}
            )
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> dict[str, Any]:
    """The validation figures of `validate`'s rows: mean voxel Dice over patients; over vessels with a given
    centerline the overlap, the share found (overlap at least `FOUND_OVERLAP`) and the mean distance of those
    found; over patients with given centerlines the total length of stray derived lines
    (`plaque.data.centerline_scores.stray_length`) and the patients that have any."""
    per_patient = rows.drop_duplicates("patient")
    lines = rows[rows["vessel"] != ""] if "overlap" in rows else rows.iloc[:0]
    found = lines[lines["overlap"] >= FOUND_OVERLAP] if len(lines) else lines
    return {
        "val_patients": int(len(per_patient)),
        "vessel_dice": float(per_patient["dice"].mean()),
        "vessel_dice_min": float(per_patient["dice"].min()),
        "centerline_vessels": int(len(lines)),
        "centerline_found": float(len(found) / len(lines)) if len(lines) else float("nan"),
        "centerline_overlap": float(lines["overlap"].mean()) if len(lines) else float("nan"),
        "centerline_mean_mm": float(found["mean_mm"].mean()) if len(found) else float("nan"),
        "stray_mm": float(per_patient["stray_mm"].sum()) if len(lines) else float("nan"),
        "stray_patients": int((per_patient["stray_mm"] > 0).sum()) if len(lines) else 0,
        "seconds_per_scan": float(per_patient["seconds"].mean()),
    }


def vessel_card(metrics: dict[str, Any], settings: dict[str, Any], window_hu: list[float], data: str) -> str:
    """The vessel model's model card (markdown) from its validation ``metrics`` (`summarise` and `run`), its
    ``vessel`` settings, the HU window of its input and ``data.raw`` of params (``phantom`` or a raw folder)."""
    cohort = "the built-in synthetic phantom" if data == PHANTOM else f"the raw cohort `{data}`"
    lines = [
        "# Model card: vessel model (`models/vessel/best.pt`)",
        "",
        f"**Intended use.** {INTENDED_USE}",
        "",
        "| | |",
        "|---|---|",
        "| what it does | finds the coronary vessels (wall, lumen and plaque) in a whole scan, so that "
        "`python -m plaque.segment` can derive centerlines for a scan that comes without one; not part of the paper |",
        f"| network | MONAI 3D U-Net, widths {settings['channels']}, {settings['res_units']} residual unit(s) per block |",
        f"| input | the scan windowed to {window_hu} HU, on an isotropic {settings['spacing_mm']} mm grid |",
        f"| training data | {cohort}: {metrics['train_patients']} training patients |",
        f"| training | {settings['steps']} AdamW steps (peak {settings['lr']}, cosine decay) of {settings['batch_size']} "
        f"crops of {settings['patch']}³ voxels, {metrics['precision']}, {metrics['train_seconds'] / 60:.1f} min on "
        f"{metrics['device']} |",
        f"| vessel mask | probability ≥ {settings['threshold']}, enclosed holes filled, pieces under "
        f"{100 * float(settings['min_piece_fraction']):g} % of the largest one's volume dropped |",
        f"| validation | {metrics['val_patients']} patients, each whole scan on its own voxel grid |",
        f"| vessel Dice | {metrics['vessel_dice']:.3f} (lowest patient {metrics['vessel_dice_min']:.3f}) |",
        f"| centerlines from its mask | overlap {metrics['centerline_overlap']:.3f}, mean distance "
        f"{metrics['centerline_mean_mm']:.3f} mm, {metrics['centerline_found']:.0%} of "
        f"{metrics['centerline_vessels']} given vessels found |",
        f"| stray centerlines | {metrics['stray_mm']:.0f} mm in {metrics['stray_patients']} of "
        f"{metrics['val_patients']} patients (derived lines that follow no given one: plaque would be segmented "
        "along them) |",
        f"| time | {metrics['seconds_per_scan']:.1f} s per scan (mask and centerlines) |",
        "",
        "Overlap: the share of a given centerline's points within 1 mm of the derived line (CAT08), averaged over "
        f"the given vessels; found: overlap at least {FOUND_OVERLAP}; mean distance over the vessels found. docs/vessel-model.md has the measurements behind "
        "its settings.",
    ]
    if data == PHANTOM:
        lines += ["", f"**Limitations.** {PHANTOM_CAVEAT}"]
    return "\n".join(lines) + "\n"


def run(
    raw: Path, processed: Path, out: Path, results: Path, cfg: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """Train, validate and write the vessel model (the module docstring); returns the metrics."""
    settings = cfg["vessel"]
    cases = load_cases(raw, processed, cfg, ("train", "val"))
    t0 = time.perf_counter()
    precision = resolve_precision(cfg["train"]["precision"], device)
    net = train_vessel_net(cases["train"], settings, device, precision)
    train_s = time.perf_counter() - t0
    rows = validate(net, cases["val"], settings, float(cfg["preprocess"]["step_mm"]), device)
    metrics = {
        **summarise(rows),
        "train_patients": len(cases["train"]),
        "train_seconds": round(train_s, 1),
        "device": str(device),
        "precision": precision,
    }
    record = vessel_record(
        {k: v.detach().cpu() for k, v in net.state_dict().items()},
        settings,
        cfg["preprocess"]["window_hu"],
        metrics=metrics,
    )
    with atomic_folder(Path(out)) as tmp:
        save_atomic(record, tmp / BEST_FILE)
        (tmp / CARD_FILE).write_text(vessel_card(metrics, settings, record["window_hu"], cfg["data"]["raw"]))
    with atomic_folder(Path(results)) as tmp:
        rows.to_csv(tmp / PATIENTS_FILE, index=False, float_format="%.4f")
        write_json_atomic(tmp / METRICS_FILE, metrics)
    log.info(
        "vessel model: validation Dice %.3f, centerline overlap %.3f",
        metrics["vessel_dice"],
        metrics["centerline_overlap"],
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.train.vessel", description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="raw cohort folder")
    parser.add_argument("--processed", type=Path, required=True, help="its processed folder (for the splits)")
    parser.add_argument("--out", type=Path, required=True, help="model folder (best.pt)")
    parser.add_argument("--results", type=Path, required=True, help="results folder (metrics.json)")
    add_config_options(parser)
    add_device_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def body() -> None:
        cfg = load_config(args.params, args.profile)
        run(args.raw, args.processed, args.out, args.results, cfg, resolve_device(args.device))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
