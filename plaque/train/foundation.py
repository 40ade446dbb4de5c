"""Foundation: pretrain a SAM image encoder without official weights by masked-image modelling.

    python -m plaque.train.foundation --data data/foundation/processed --out models/foundation \\
        --run models/foundation_run --results results/foundation [--profile NAME] [--fresh]

SAM's official checkpoints exist for ViT-B/L/H only. A backbone without them (the demo's ``vit_tiny``)
gets a stand-in pretrained the way SAM's own encoder began: self-supervised masked-image modelling,
here SimMIM with the loss on every pixel (`plaque.models.mim` says why), on the slices of a phantom cohort of its own (``foundation.seed``,
never the evaluation cohort's). Trains with AdamW through the shared trainer (``foundation`` section:
batch, epochs, samples per epoch, learning rate, mask ratio and block), keeps its last epoch (as
SimMIM does) and reports its validation L1, and writes the encoder of the best epoch in SAM's checkpoint layout
(``image_encoder.*`` keys only) as ``OUT/sam_<backbone>_<sha256 prefix>.pth``, which
`plaque.models.sam.load_sam_image_encoder` verifies and loads exactly like an official checkpoint; the
run's own checkpoints go to ``RUN`` (``best.pt``, ``last.pt``; resumed from there). Also writes
``RESULTS/metrics.json`` and DVCLive curves under ``RESULTS/live``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from plaque.atomic import write_json_atomic
from plaque.checkpoint import load_checkpoint
from plaque.data.dataset import SliceDataset
from plaque.models.mim import MaskedImageModel, block_mask, masked_l1, mim_loss
from plaque.models.sam import (
    PIXEL_MEAN,
    PIXEL_STD,
    build_image_encoder,
    embedding_size,
    sam_input,
    save_sam_image_encoder,
)
from plaque.train.cli import add_common_options, run_stage
from plaque.train.distributed import DistInfo
from plaque.train.trainer import FitConfig, FitResult, fit, seed_everything, to_device

log = logging.getLogger("plaque.train.foundation")
MONITOR = "val_loss"
SOURCE = "phantom-simmim"  # what `plaque.models.sam.weights_source` reports for this stand-in
VAL_MASK_SEED = 0  # validation masks are fixed, so the validation loss is comparable across epochs


class MimBatch:
    """SAM inputs and masks of a batch of slices (B, 1, s, s) for one `MaskedImageModel`, and its losses."""

    def __init__(self, model: MaskedImageModel, input_size: int, ratio: float, block: int) -> None:
        self.input_size, self.ratio, self.block = input_size, ratio, block
        self.grid = embedding_size(input_size, model.patch)
        self.patch = model.patch
        self.mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)

    def losses(self, model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(the pretraining loss over all pixels, the L1 over the hidden pixels alone) of ``model`` on slices
        ``x`` (B, 1, s, s), with fresh block masks drawn from ``generator``."""
        inputs = sam_input(x, self.input_size, self.mean.to(x.device), self.std.to(x.device))
        mask = block_mask(len(x), self.grid, self.block, self.ratio, generator).to(x.device)
        pred, target = model(inputs, mask), inputs[:, :1]
        return mim_loss(pred, target), masked_l1(pred, target, mask, self.patch)


class FoundationStep:
    """One training step: the pretraining loss on fresh masks (drawn from torch's global generator)."""

    def __init__(self, batch: MimBatch) -> None:
        self.batch = batch

    def __call__(
        self, model: nn.Module, batch: tuple[Tensor, Tensor], info: DistInfo
    ) -> tuple[Tensor, dict[str, float]]:
        loss, hidden = self.batch.losses(model, batch[0])
        return loss, {"masked_l1": float(hidden)}


class FoundationValidation:
    """Validation over the whole split, masks drawn from a fixed seed: the pretraining loss (``val_loss``) and
    the L1 of the hidden pixels alone (``masked_l1``, how well the encoder inpaints)."""

    def __init__(self, batch: MimBatch) -> None:
        self.batch = batch

    def __call__(self, model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
        generator = torch.Generator().manual_seed(VAL_MASK_SEED)
        totals = torch.zeros(2, dtype=torch.float64)
        for x, _ in loader:
            x = to_device(x, info.device)
            totals += torch.tensor([float(v) for v in self.batch.losses(model, x, generator)]) * len(x)
        loss, hidden = (totals / len(loader.dataset)).tolist()  # type: ignore[arg-type]
        return {MONITOR: loss, "masked_l1": hidden}


def train_foundation(
    data: Path, out: Path, run: Path, results: Path, cfg: dict[str, Any], info: DistInfo, resume: bool = True
) -> FitResult:
    """Pretrain ``stage2.backbone`` by SimMIM on ``data``'s train split; write its SAM-layout checkpoint to ``out``.

    ``out`` receives the encoder (``sam_<backbone>_<sha256>.pth`` and its ``.json``) and nothing else, so a
    folder the SAM-based methods depend on changes exactly when the encoder's weights do; the MIM run's own
    ``best.pt`` and ``last.pt`` (which also record the code they ran with) go to ``run``."""
    s2, fd = cfg["stage2"], cfg["foundation"]
    seed_everything(fd["seed"])
    encoder = build_image_encoder(
        s2["backbone"], input_size=s2["input_size"], patch_size=s2["patch_size"], embed_dim=s2["embed_dim"]
    )
    model = MaskedImageModel(encoder)
    batch = MimBatch(model, s2["input_size"], fd["mask_ratio"], fd["mask_block"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=fd["lr"], weight_decay=fd["weight_decay"])
    aug = cfg["augment"]
    train_set = SliceDataset(data, "train", aug["rotation_p"], aug["rotation_max_deg"], aug["shift_mm"])
    val_set = SliceDataset(data, "val", stride=cfg["train"]["val_stride"])
    fit_cfg = FitConfig(
        max_epochs=fd["epochs"],
        val_every=fd["epochs"],  # SimMIM keeps its last epoch: one validation, at the end, reports it
        patience=fd["epochs"],
        batch_size_per_gpu=fd["batch_size"],
        seed=fd["seed"],
        num_workers=cfg["train"]["num_workers"],
        samples_per_epoch=fd["samples_per_epoch"],
        precision=cfg["train"]["precision"],
        monitor=MONITOR,
        mode="min",
        out_dir=run,
        live_dir=results / "live",
        resume=resume,
    )
    started = time.perf_counter()
    result = fit(
        model,
        optimizer,
        train_set,
        val_set,
        FoundationStep(batch),
        FoundationValidation(batch),
        fit_cfg,
        info,
        record={"config": cfg},
    )
    seconds = time.perf_counter() - started
    if info.is_main:
        model.load_state_dict(load_checkpoint(result.best_path)["model"])
        record = {
            "source": SOURCE,
            "backbone": s2["backbone"],
            "input_size": s2["input_size"],
            "patch_size": s2["patch_size"],
            "cohort_seed": fd["seed"],
            "val_loss": result.best_score,
            "val_masked_l1": result.best_metrics.get("masked_l1"),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "train_slices": len(train_set),
        }
        path = save_sam_image_encoder(model.encoder, out, s2["backbone"], record)
        write_json_atomic(
            results / "metrics.json",
            {**record, "checkpoint": path.name, "train_seconds": round(seconds, 1), "device": info.device.type},
        )
        log.info("foundation done: %s, best validation L1 %.4f at epoch %s", path, result.best_score, result.best_epoch)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.train.foundation", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="preprocessed slices of the foundation cohort")
    parser.add_argument("--out", type=Path, required=True, help="encoder folder (models/foundation)")
    parser.add_argument("--run", type=Path, required=True, help="the MIM run's checkpoints (models/foundation_run)")
    parser.add_argument("--results", type=Path, required=True, help="metrics folder (results/foundation)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    return run_stage(
        args,
        lambda cfg, info: train_foundation(
            args.data, args.out, args.run, args.results, cfg, info, resume=not args.fresh
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
