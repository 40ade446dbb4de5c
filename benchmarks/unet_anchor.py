"""The plain U-Net behind the demo's Dice targets, at a chosen number of training images.

    python -m benchmarks.unet_anchor [--data data/processed] [--steps 384,768,1536] [--augment] [--seed 0]
                                     [--threads 1] [--json results/bench/unet_anchor.json]

The demo's targets for ours and nnU-Net were set from a plain MONAI ``BasicUNet`` trained on the same
cross-sections (batch 32, AdamW 1e-3 at a constant rate, Dice + cross-entropy, one CPU thread, no
augmentation). This benchmark retrains that reference and scores it on the test split with the evaluator's
own rules (`plaque.eval.run.score_method`, intervals from the patient bootstrap of ``eval``), after each
number of steps in ``--steps``, so that it can be set beside the methods at the images they see: the demo
trains each of them on ``train.samples_per_epoch`` x ``train.max_epochs`` slices (12 288: 384 steps of 32).
``--augment`` draws the batches through the pipeline's training dataset with its ``augment`` settings
(rotation, centre shift), as every method of the shared trainer sees them. Fp32; no target: a reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet

from benchmarks.common import format_table, machine_info
from plaque.atomic import write_json_atomic
from plaque.classes import CLASS_NAMES, FOREGROUND, NUM_CLASSES
from plaque.config import load_config
from plaque.data.dataset import SliceDataset
from plaque.data.processed import load_processed
from plaque.eval.cards import interval_text
from plaque.eval.predictions import test_rows
from plaque.eval.report import method_metrics
from plaque.eval.run import score_method
from plaque.inference import predict_batches
from plaque.paths import repo_root

BATCH, LR = 32, 1.0e-3  # the reference's settings
CPU = torch.device("cpu")


def predict_test(net: torch.nn.Module, images: np.ndarray, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Patient → ``(N, H, W)`` uint8 class ids of its test cross-sections ``images[rows]`` (``images`` ``(M, H, W)``
    float32, as the dataset gives them), predicted as the inference layer predicts (`predict_batches`)."""
    net.eval()
    out = {p: predict_batches(net, images[r], CPU) for p, r in rows.items()}
    net.train()
    return out


def train_and_score(
    data: Path, stops: list[int], augment: dict[str, float] | None, seed: int, cfg: dict[str, Any]
) -> list[dict[str, Any]]:
    """One ``BasicUNet`` trained ``max(stops)`` steps of `BATCH` training slices (augmented with ``augment``'s
    ``rotation_p``, ``rotation_max_deg`` and ``shift_mm`` where given); after each step count in ``stops`` its
    test-split scores (`plaque.eval.report.method_metrics`), with the step count, images and seconds."""
    torch.manual_seed(seed)
    aug = augment or {"rotation_p": 0.0, "rotation_max_deg": 0.0, "shift_mm": 0.0}
    train = SliceDataset(data, "train", aug["rotation_p"], aug["rotation_max_deg"], aug["shift_mm"])
    processed = load_processed(data)
    rows = test_rows(processed)
    images = np.asarray(processed.images, dtype=np.float32)
    step_mm = float(cfg["preprocess"]["step_mm"])
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LR)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    results, seconds = [], 0.0
    for step in range(1, max(stops) + 1):
        t0 = time.perf_counter()
        items = [train[int(i)] for i in torch.randint(len(train), (BATCH,))]
        x = torch.stack([image for image, _ in items])
        y = torch.stack([labels for _, labels in items])[:, None]
        loss = loss_fn(net(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        seconds += time.perf_counter() - t0
        if step in stops:
            scores = score_method("unet", data, predict_test(net, images, rows), processed, step_mm)
            metrics = method_metrics("unet", scores, cfg["eval"])
            results.append({"steps": step, "images": step * BATCH, "train_seconds": round(seconds, 1), **metrics})
            print(f"after {step} steps: macro Dice {metrics['macro_dice']['mean']:.3f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.unet_anchor", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=repo_root() / "data" / "processed")
    parser.add_argument("--steps", default="384,768,1536", help="step counts to score after (comma-separated)")
    parser.add_argument("--augment", action="store_true", help="the pipeline's training augmentation (params augment)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--params", type=Path, default=None, help="params file (default: repository params.yaml)")
    parser.add_argument("--profile", default=None, help="profile to apply (default: the file's `profile` key)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    stops = sorted({int(s) for s in args.steps.split(",")})
    if not args.data.is_dir() or stops[0] < 1:
        parser.error(f"--data {args.data} must be a processed dataset and --steps positive integers")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.params, args.profile)
    augment = cfg["augment"] if args.augment else None
    info = machine_info(CPU, repo_root())
    results = train_and_score(args.data, stops, augment, args.seed, cfg)
    print(
        f"{info['cpu']}, torch {info['torch']}, {args.threads} thread(s) | BasicUNet, batch {BATCH}, AdamW {LR}, "
        f"seed {args.seed}, augmentation {'params augment' if augment else 'none'}"
    )
    headers = ["steps", "images", "seconds", *(CLASS_NAMES[c] for c in FOREGROUND)]
    table = [
        [r["steps"], r["images"], r["train_seconds"], *(interval_text(r["dice"][CLASS_NAMES[c]]) for c in FOREGROUND)]
        for r in results
    ]
    print(format_table(headers, table))
    if args.json:
        write_json_atomic(args.json, {"machine": info, "augment": augment, "seed": args.seed, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
