"""A toy regression task for the trainer tests; ``python -m tests.train.toy`` runs it (also under `torchrun`).

The data augmentation draws from the NumPy and Python generators, the model has dropout (torch
generator), the warmup-then-cosine schedule (`WARMUP`) changes the learning rate every step and a
`Tracker` is the ``extra_state``:
every piece of state that `fit` must carry across a resume is exercised.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from plaque.train.distributed import DistInfo, cleanup, init_distributed
from plaque.train.trainer import FitConfig, FitResult, fit, seed_everything, to_device

WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0])


class ToyData(Dataset):
    """``n`` samples ``{"x": (4,) float32, "y": () float32}`` of ``y = x·w + 0.5``; ``augment`` jitters ``x``."""

    def __init__(self, n: int, seed: int, augment: bool = False) -> None:
        self.augment = augment
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
        self.y = self.x @ WEIGHTS + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not self.augment:
            return {"x": self.x[i], "y": self.y[i]}
        jitter = 0.01 * float(np.random.randn()) + 0.01 * random.gauss(0.0, 1.0)
        return {"x": self.x[i] + jitter, "y": self.y[i]}


class ToyNet(nn.Module):
    """``(B, 4) -> (B,)``: a two-layer MLP with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


class Tracker:
    """Running mean of the training predictions: state outside the model, like Stage-1's prototypes."""

    def __init__(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = 0

    def update(self, pred: Tensor) -> None:
        self.total += pred.detach().double().sum()
        self.count += pred.numel()

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = state["total"].clone(), state["count"]


def make_step(tracker: Tracker | None = None, sleep: float = 0.0, nan_at: int | None = None):
    """A `fit` step; its ``nan_at``-th call (counting from 1) returns a NaN loss."""
    calls = {"n": 0}

    def step(model: nn.Module, batch: dict[str, Tensor], info: DistInfo) -> tuple[Tensor, dict[str, Tensor]]:
        calls["n"] += 1
        pred = model(batch["x"])
        loss = F.mse_loss(pred, batch["y"])
        if calls["n"] == nan_at:
            loss = loss * float("nan")
        if tracker is not None:
            tracker.update(pred)
        if sleep:
            time.sleep(sleep)
        return loss, {"mae": (pred - batch["y"]).abs().mean()}

    step.calls = calls  # type: ignore[attr-defined]
    return step


@torch.no_grad()
def toy_validate(model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
    """Mean squared error over the validation set."""
    se, n = 0.0, 0
    for batch in loader:
        batch = to_device(batch, info.device)
        se += float(((model(batch["x"]) - batch["y"]) ** 2).sum())
        n += len(batch["y"])
    return {"mse": se / n}


class Scripted:
    """A validate() that returns ``{"score": scores[k]}`` on its k-th call (the last score repeats)."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.calls = 0

    def __call__(self, model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
        score = self.scores[min(self.calls, len(self.scores) - 1)]
        self.calls += 1
        return {"score": score}


WARMUP = 0.2  # share of the steps warming up; then cosine decay (FitConfig's warmup and decay)


def toy_config(out_dir: Path, **overrides: Any) -> FitConfig:
    """The toy's `FitConfig`: 8 epochs of batch 8, validation every epoch, MSE to minimise, the warmup-then-cosine
    schedule; ``overrides`` replace any field."""
    base: dict[str, Any] = dict(
        max_epochs=8,
        val_every=1,
        patience=8,
        batch_size_per_gpu=8,
        seed=0,
        num_workers=0,
        samples_per_epoch="all",
        monitor="mse",
        mode="min",
        out_dir=out_dir,
        live_dir=None,
        warmup=WARMUP,
        decay="cosine",
    )
    return FitConfig(**{**base, **overrides})


def build(lr: float = 0.03) -> tuple[ToyNet, torch.optim.Optimizer, Tracker]:
    """A freshly initialised model (seed first), Adam and a Tracker."""
    model = ToyNet()
    return model, torch.optim.Adam(model.parameters(), lr=lr), Tracker()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of the state dict, in order."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.train.toy")
    parser.add_argument("--out", type=Path, required=True, help="run folder: ckpt/ and live/ go here")
    parser.add_argument("--report", type=Path, required=True, help="folder for result-rank<r>.json")
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--val-every", type=int, default=2)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--scores", default="", help="comma-separated scripted validation scores (mode max)")
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds to sleep per step")
    parser.add_argument(
        "--per-rank-dirs",
        action="store_true",
        help="give ranks > 0 their own out folder, to show that they write nothing",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    info = init_distributed(use_cuda=False)
    try:
        seed_everything(0)
        model, optimizer, tracker = build()
        out = args.out / f"rank{info.rank}" if args.per_rank_dirs and info.rank > 0 else args.out
        scripted = Scripted([float(s) for s in args.scores.split(",")]) if args.scores else None
        cfg = toy_config(
            out / "ckpt",
            max_epochs=args.max_epochs,
            val_every=args.val_every,
            patience=args.patience,
            batch_size_per_gpu=args.batch,
            monitor="score" if scripted else "mse",
            mode="max" if scripted else "min",
            live_dir=out / "live",
        )
        result: FitResult = fit(
            model,
            optimizer,
            ToyData(48, 1, augment=True),
            ToyData(16, 2),
            make_step(tracker, args.step_sleep),
            scripted or toy_validate,
            cfg,
            info,
            extra_state=tracker,
        )
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / f"result-rank{info.rank}.json").write_text(
            json.dumps(
                {
                    "rank": info.rank,
                    "epochs_run": result.epochs_run,
                    "best_epoch": result.best_epoch,
                    "best_score": result.best_score,
                    "stopped_early": result.stopped_early,
                    "world_size": result.world_size,
                    "effective_batch_size": result.effective_batch_size,
                    "validate_calls": scripted.calls if scripted else None,
                    "weights": weights_digest(model),
                    "history": result.history,
                }
            )
        )
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
