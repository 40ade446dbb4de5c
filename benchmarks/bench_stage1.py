"""Time Stage-1 training to its stop on this machine and print throughput, memory and codebook health.

    python -m benchmarks.bench_stage1 [--profile demo] [--data data/processed]

Trains in one process (as `dvc repro` does on a machine without GPUs) into a temporary folder.
When ``--data`` does not exist, the profile's phantom cohort is generated and preprocessed first
(not timed). Target on 2 CPU cores (demo profile): at most 3 minutes to the stop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ensure_processed, peak_memory
from plaque.config import load_config
from plaque.data.dataset import SliceDataset
from plaque.train.distributed import DistInfo
from plaque.train.stage1 import train_stage1

TARGET_S = 180.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_stage1", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data", type=Path, default=Path("data/processed"))
    args = parser.parse_args()
    cfg = load_config(profile=args.profile)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_processed(args.data, cfg, Path(tmp))
        n_train, n_val = len(SliceDataset(data, "train")), len(SliceDataset(data, "val"))
        start = time.perf_counter()
        result = train_stage1(
            data, Path(tmp) / "models", Path(tmp) / "results", cfg, DistInfo(device=device), resume=False
        )
        seconds = time.perf_counter() - start
    validations = sum(1 for h in result.history if "val/probe_dice" in h)
    images = result.epochs_run * n_train + validations * n_val
    best = result.best_metrics
    print(
        f"profile {args.profile} on {device} ({torch.get_num_threads()} threads), {n_train} train / {n_val} val slices"
    )
    print(
        f"time to stop: {seconds:.1f} s for {result.epochs_run} epochs "
        f"({'early stop' if result.stopped_early else 'epoch budget'}); target <= {TARGET_S:.0f} s on 2 cores: "
        f"{'ok' if seconds <= TARGET_S else 'OVER TARGET'}"
    )
    print(f"throughput: {images / seconds:.1f} images/s (training and validation passes)")
    print(f"peak memory: {peak_memory(device)}")
    print(
        f"best {result.best_score:.4f} {cfg['stage1']['monitor']} at epoch {result.best_epoch}; "
        f"codes used {best.get('codes_used', float('nan')):.1%}, perplexity {best.get('perplexity', float('nan')):.0f}, "
        f"reconstruction L1 {best.get('l1', float('nan')):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
