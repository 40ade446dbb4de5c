"""Validation sweep of Stage-2 settings: how the demo's optimiser schedule, widths and precision were chosen.

    python -m benchmarks.sweep [--method ours] [--data data/processed] [--prior models/stage1/contrastive/best.pt]
                               [--base "train.max_epochs=4 train.samples_per_epoch=1024 ..."]
                               [--variant NAME="key=value ..."]... [--threads N] [--out DIR] [--json FILE]

Each variant trains ``--method`` through the Stage-2 trainer itself (`plaque.train.stage2.train_stage2`) on the
train split of ``--data`` with the ``demo`` profile, the ``--base`` overrides and then the variant's own
(dotted keys of the resolved configuration, values parsed as YAML), and keeps the validation Dice per class
after every epoch. The image encoder starts from random weights in every variant (the sweep compares
schedules, not encoders), which the table says. Prints one row per variant and epoch (macro Dice and Dice
per class on the validation split, pooled over its cross-sections as the trainer's model selection does)
and the seconds each run took, and writes them as JSON.

Without ``--variant``, runs `DEFAULT_VARIANTS`: the peak learning rate (3e-4, 1e-3, 3e-3 with 5 % warmup
and cosine decay), cosine decay against a constant rate, bf16 against fp32, and embedding width 128
against SAM's 256, all at the same number of training images.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import format_table, machine_info
from plaque.atomic import write_json_atomic
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.config import load_config
from plaque.train.distributed import init_distributed
from plaque.train.stage2 import train_stage2

BASE = (
    "train.max_epochs=4 train.samples_per_epoch=1024 train.precision=bf16 stage2.embed_dim=128 "
    "train.lr=1.0e-3 train.warmup=0.05 train.decay=cosine"
)
DEFAULT_VARIANTS: dict[str, str] = {
    "peak 1e-3 (kept)": "",
    "peak 3e-4": "train.lr=3.0e-4",
    "peak 3e-3": "train.lr=3.0e-3",
    "constant 1e-3": "train.decay=constant",
    "fp32": "train.precision=fp32",
    "width 256": "stage2.embed_dim=256",
}
CLASSES = [CLASS_NAMES[c] for c in FOREGROUND]


def apply_overrides(cfg: dict[str, Any], overrides: str) -> dict[str, Any]:
    """A copy of ``cfg`` with ``"a.b=value c.d=value"`` set (values parsed as YAML; each key must exist)."""
    out = copy.deepcopy(cfg)
    for item in overrides.split():
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"unknown configuration key {key!r}")
        node[leaf] = yaml.safe_load(value)
    return out


def run_variant(cfg: dict[str, Any], method: str, data: Path, prior: Path | None, out: Path) -> dict[str, Any]:
    """Train one variant into ``out``; its seconds and validation history (epoch, macro and per-class Dice)."""
    started = time.perf_counter()
    result = train_stage2(
        data, prior, out / "model", out / "results", out / "predictions", cfg, init_distributed(), method, False
    )
    history = [
        {
            "epoch": int(h["epoch"]),
            "images": int(h["images"]),
            "macro_dice": h["val/macro_dice"],
            **{name: h[f"val/dice_{name}"] for name in CLASSES},
        }
        for h in result.history
        if "val/macro_dice" in h
    ]
    return {"seconds": round(time.perf_counter() - started, 1), "history": history}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ours")
    parser.add_argument("--data", type=Path, default=Path("data/processed"))
    parser.add_argument("--prior", type=Path, default=Path("models/stage1/contrastive/best.pt"))
    parser.add_argument("--base", default=BASE, help=f"overrides of every variant (default: {BASE})")
    parser.add_argument("--variant", action="append", default=[], help='NAME="key=value ..." (repeatable)')
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=Path("results/bench/sweep.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    base = apply_overrides(load_config(profile="demo"), args.base)
    base["stage2"]["weights"] = "random"
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for n, (name, overrides) in enumerate(variants.items()):
            runs[name] = {
                "overrides": overrides,
                **run_variant(
                    apply_overrides(base, overrides), args.method, args.data, args.prior, root / f"variant{n}"
                ),
            }
    rows = [
        [name, h["epoch"], h["images"], *(f"{h[k]:.3f}" for k in ("macro_dice", *CLASSES)), run["seconds"]]
        for name, run in runs.items()
        for h in run["history"]
    ]
    print(machine_info(torch.device("cpu"), Path.cwd()))
    print(f"{args.method}, demo profile + {args.base}; random encoder start; validation Dice pooled over sections")
    print(format_table(["variant", "epoch", "images", "macro", *CLASSES, "run s"], rows))
    write_json_atomic(
        args.json,
        {
            "machine": machine_info(torch.device("cpu"), Path.cwd()),
            "base": args.base,
            "method": args.method,
            "threads": args.threads,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
