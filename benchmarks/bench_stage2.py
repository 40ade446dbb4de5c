"""Stage-2 on this machine: the cost of the prior and FAA per training step, and `ours` trained to its stop.

    python benchmarks/bench_stage2.py [--profile demo] [--data data/processed] [--prior models/stage1/best.pt]
                                      [--steps 10] [--steps-only]

1. Step time, in one run: a training step (forward, loss, backward, AdamW) of `ours` and of the same
   model without the prior (`no_prior`: no Stage-1 encoder, adapter or FAA), on the same batch of
   training slices, after 3 warm-up steps, median of ``--steps`` steps taken alternately.
2. Unless ``--steps-only``: `ours` trained to its early stop in one process (as `dvc repro` does
   without GPUs): wall time, images/s, peak memory, validation Dice per class.

Needs a Stage-1 checkpoint (``--prior``); when ``--data`` does not exist, the profile's phantom
cohort is generated and preprocessed first (not timed). Targets on 2 CPU cores (demo profile): the
prior and FAA add at most 15 % to a step; `ours` stops within 6 minutes with a validation macro Dice
of at least 0.75.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.config import load_config
from plaque.data.dataset import SliceDataset
from plaque.seg_losses import SegLoss
from plaque.train import DistInfo
from plaque.train.stage2 import Stage2Step, build_model, train_stage2

from common import ensure_processed, peak_memory

TARGET_S = 360.0
TARGET_DICE = 0.75
TARGET_OVERHEAD = 0.15
WARMUP = 3


def step_times(cfg: dict[str, Any], prior: Path, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device,
               steps: int) -> dict[str, float]:
    """Median training-step seconds of `ours` and `no_prior` on ``batch``, steps interleaved."""
    info = DistInfo(device=device)
    loss = SegLoss(ce_weight=cfg["stage2"]["loss"]["ce"], dice_weight=cfg["stage2"]["loss"]["dice"])
    step = Stage2Step(loss)
    runs = {}
    for method in ("ours", "no_prior"):
        torch.manual_seed(0)
        model, _ = build_model(cfg, method, prior)
        model.to(device).train()
        runs[method] = (model, torch.optim.AdamW(list(model.trainable_parameters()), lr=cfg["stage2"]["optim"]["lr"]))
    batch = tuple(t.to(device) for t in batch)
    times: dict[str, list[float]] = {m: [] for m in runs}
    for i in range(WARMUP + steps):
        for method, (model, optimizer) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            total, _ = step(model, batch, info)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= WARMUP:
                times[method].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data", type=Path, default=Path("data/processed"))
    parser.add_argument("--prior", type=Path, default=Path("models/stage1/best.pt"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--steps-only", action="store_true", help="skip training to the stop")
    args = parser.parse_args()
    cfg = load_config(profile=args.profile)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.prior.is_file():
        print(f"error: {args.prior}: Stage-1 checkpoint not found; run `dvc repro stage1` first", file=sys.stderr)
        return 2
    s2 = cfg["stage2"]
    print(f"profile {args.profile} on {device} ({torch.get_num_threads()} threads): {s2['backbone']} "
          f"{s2['input_size']}² patch {s2['patch_size']}, sam_tuning {s2['sam_tuning']}, decoder {s2['decoder']}")
    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_processed(args.data, cfg, Path(tmp))
        train_set = SliceDataset(data, "train")
        bs = cfg["train"]["batch_size_per_gpu"]
        samples = [train_set[i] for i in range(bs)]
        batch = (torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]))
        times = step_times(cfg, args.prior, batch, device, args.steps)
        overhead = times["ours"] / times["no_prior"] - 1
        print(f"training step, batch {bs}, median of {args.steps}: ours {times['ours'] * 1e3:.1f} ms, "
              f"no_prior {times['no_prior'] * 1e3:.1f} ms; prior + FAA add {overhead:+.1%} "
              f"(target <= {TARGET_OVERHEAD:.0%}: {'ok' if overhead <= TARGET_OVERHEAD else 'OVER TARGET'})")
        if args.steps_only:
            return 0
        n_train, n_val = len(train_set), len(SliceDataset(data, "val"))
        start = time.perf_counter()
        result = train_stage2(data, args.prior, Path(tmp) / "models", Path(tmp) / "results", Path(tmp) / "pred",
                              cfg, DistInfo(device=device), method="ours", resume=False)
        seconds = time.perf_counter() - start
    validations = sum(1 for h in result.history if "val/macro_dice" in h)
    images = result.epochs_run * n_train + validations * n_val
    best = result.best_metrics
    per_class = ", ".join(f"{CLASS_NAMES[c]} {best.get(f'dice_{CLASS_NAMES[c]}', float('nan')):.3f}" for c in FOREGROUND)
    print(f"ours to its stop: {seconds:.1f} s for {result.epochs_run} epochs "
          f"({'early stop' if result.stopped_early else 'epoch budget'}), including test predictions; "
          f"target <= {TARGET_S:.0f} s: {'ok' if seconds <= TARGET_S else 'OVER TARGET'}")
    print(f"throughput: {images / seconds:.1f} images/s (training and validation passes)")
    print(f"peak memory: {peak_memory(device)}")
    print(f"best validation macro Dice {result.best_score:.4f} at epoch {result.best_epoch} "
          f"(target >= {TARGET_DICE}: {'ok' if result.best_score >= TARGET_DICE else 'BELOW TARGET'}); {per_class}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
