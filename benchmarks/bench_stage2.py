"""Stage-2 on this machine: the cost of the prior and FAA per training step, and `ours` trained to its stop.

    python -m benchmarks.bench_stage2 [--profile demo] [--data data/processed] [--prior models/stage1/contrastive/best.pt]
                                      [--steps 10] [--steps-only]

1. Step time, in one run (`benchmarks.steps`): a training step (forward, loss, backward, AdamW) of
   `ours` and of the same model without the prior (`no_prior`: no Stage-1 encoder, adapter or FAA),
   on the same batch of random slices, after 3 warm-up steps, median of ``--steps`` steps taken in turn.
2. Unless ``--steps-only``: `ours` trained to its early stop in one process (as `dvc repro` does
   without GPUs): wall time, images/s, peak memory, validation Dice per class. Needs a Stage-1
   checkpoint (``--prior``); when ``--data`` does not exist, the profile's phantom cohort is generated
   and preprocessed first (not timed).

Targets on 2 CPU cores (demo profile): the prior and FAA add at most 15 % to a step; `ours` stops
within 6 minutes with a validation macro Dice of at least 0.75.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ensure_processed, peak_memory
from benchmarks.steps import TARGET_OVERHEAD, WARMUP, benchmark_steps
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.config import load_config
from plaque.data.dataset import SliceDataset
from plaque.train.distributed import DistInfo
from plaque.train.stage2 import train_stage2

TARGET_S = 360.0
TARGET_DICE = 0.75


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_stage2", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data", type=Path, default=Path("data/processed"))
    parser.add_argument("--prior", type=Path, default=Path("models/stage1/contrastive/best.pt"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--steps-only", action="store_true", help="skip training to the stop")
    args = parser.parse_args()
    cfg = load_config(profile=args.profile)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.steps_only and not args.prior.is_file():
        print(f"error: {args.prior}: Stage-1 checkpoint not found; run `dvc repro stage1` first", file=sys.stderr)
        return 2
    s2 = cfg["stage2"]
    print(
        f"profile {args.profile} on {device} ({torch.get_num_threads()} threads): {s2['backbone']} "
        f"{s2['input_size']}² patch {s2['patch_size']}, sam_tuning {s2['sam_tuning']}, decoder {s2['decoder']}"
    )
    bs = cfg["train"]["batch_size_per_gpu"]
    report = benchmark_steps(cfg, ("ours", "no_prior"), device, bs, warmup=WARMUP, steps=args.steps, memory=False)
    times = report.methods
    overhead = report.ratios["ours/no_prior"]["train_step"] - 1
    print(
        f"training step, batch {bs}, median of {args.steps}: ours {times['ours'].train_step_s * 1e3:.1f} ms, "
        f"no_prior {times['no_prior'].train_step_s * 1e3:.1f} ms; prior + FAA add {overhead:+.1%} "
        f"(target <= {TARGET_OVERHEAD:.0%}: {'ok' if overhead <= TARGET_OVERHEAD else 'OVER TARGET'})"
    )
    if args.steps_only:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_processed(args.data, cfg, Path(tmp))
        n_train, n_val = len(SliceDataset(data, "train")), len(SliceDataset(data, "val"))
        start = time.perf_counter()
        result = train_stage2(
            data,
            args.prior,
            Path(tmp) / "models",
            Path(tmp) / "results",
            Path(tmp) / "pred",
            cfg,
            DistInfo(device=device),
            method="ours",
            resume=False,
        )
        seconds = time.perf_counter() - start
    validations = sum(1 for h in result.history if "val/macro_dice" in h)
    images = result.epochs_run * n_train + validations * n_val
    best = result.best_metrics
    per_class = ", ".join(
        f"{CLASS_NAMES[c]} {best.get(f'dice_{CLASS_NAMES[c]}', float('nan')):.3f}" for c in FOREGROUND
    )
    print(
        f"ours to its stop: {seconds:.1f} s for {result.epochs_run} epochs "
        f"({'early stop' if result.stopped_early else 'epoch budget'}), including test predictions; "
        f"target <= {TARGET_S:.0f} s: {'ok' if seconds <= TARGET_S else 'OVER TARGET'}"
    )
    print(f"throughput: {images / seconds:.1f} images/s (training and validation passes)")
    print(f"peak memory: {peak_memory(device)}")
    print(
        f"best validation macro Dice {result.best_score:.4f} at epoch {result.best_epoch} "
        f"(target >= {TARGET_DICE}: {'ok' if result.best_score >= TARGET_DICE else 'BELOW TARGET'}); {per_class}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
