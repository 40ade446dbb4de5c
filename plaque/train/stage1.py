"""Stage-1: train the contrastive VQ prior (appendix 1.3). The `torchrun` entry point.

    python -m torch.distributed.run --standalone --nproc_per_node N -m plaque.train.stage1 \\
        --data data/processed --out models/stage1/contrastive --results results/stage1/contrastive \
        [--variant contrastive|no_contrastive] [--profile NAME] [--fresh]

Trains `plaque.models.vq.VQAutoencoder` with `plaque.losses.Stage1Loss` (Adam, the appendix's lr and
betas) through the shared trainer, monitoring ``stage1.monitor`` on the validation split:
``probe_dice`` is the macro Dice (classes 1..4) on the validation slices of a linear probe of the
quantized latent, fitted on training slices the way Stage-2 reads the prior (`plaque.train.probe`);
``val_loss`` is the Stage-1 objective on validation. Writes ``OUT/best.pt`` and ``OUT/last.pt``,
``RESULTS/metrics.json`` and DVCLive curves under ``RESULTS/live``. Runs alone too (one process).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from plaque.atomic import write_json_atomic
from plaque.classes import CLASS_NAMES
from plaque.data.dataset import SliceDataset
from plaque.losses.perceptual import Perceptual
from plaque.losses.prior import Stage1Loss
from plaque.methods import PRIOR_VARIANTS, prior_stage1
from plaque.models.vq import VQAutoencoder, build_vq
from plaque.train.cli import add_common_options, run_stage
from plaque.train.distributed import DistInfo
from plaque.train.probe import PROBE_SEED, PROBE_SLICES, encode, fit_probe, probe_scores
from plaque.train.trainer import FitConfig, FitResult, fit, seed_everything, to_device

log = logging.getLogger("plaque.train.stage1")
MONITOR_MODE = {"probe_dice": "max", "val_loss": "min"}
VAL_SAMPLING_SEED = 0  # the contrastive term's sampling on validation is fixed, so val_loss is comparable


class Stage1Step:
    """One training step: the Stage-1 objective."""

    def __init__(self, loss: Stage1Loss) -> None:
        self.loss = loss

    def __call__(
        self, model: nn.Module, batch: tuple[Tensor, Tensor], info: DistInfo
    ) -> tuple[Tensor, dict[str, float]]:
        x, labels = batch
        return self.loss(model(x), x, labels)


class Stage1Validation:
    """Validation metrics: objective components, code usage, and the linear probe's Dice per class and macro
    (`plaque.train.probe`), fitted on ``probe_images``/``probe_labels`` (training slices) and scored on the
    validation slices."""

    def __init__(self, loss: Stage1Loss, probe_images: np.ndarray, probe_labels: np.ndarray) -> None:
        self.loss, self.probe_images = loss, probe_images
        self.probe_labels = torch.from_numpy(np.asarray(probe_labels, dtype=np.int64))

    def __call__(self, model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
        generator = torch.Generator().manual_seed(VAL_SAMPLING_SEED)
        sums: dict[str, float] = {}
        indices, latents, truth = [], [], []
        for batch in loader:
            x, labels = to_device(batch, info.device)
            out = model(x)
            _, parts = self.loss(out, x, labels, generator)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(x)
            indices.append(out.indices.reshape(-1))
            latents.append(out.z_q)
            truth.append(labels)
        n = len(loader.dataset)  # type: ignore[arg-type]
        probe = fit_probe(
            encode(lambda x: model.encode(x)[0], self.probe_images, info.device), self.probe_labels.to(info.device)
        )
        per_class, macro = probe_scores(probe, torch.cat(latents), torch.cat(truth))
        used, perplexity = model.codebook_usage(torch.cat(indices))
        metrics = {f"{k}": v / n for k, v in sums.items() if k != "total"}
        metrics.update(
            {"val_loss": sums["total"] / n, "probe_dice": macro, "codes_used": used, "perplexity": perplexity}
        )
        metrics.update({f"probe_dice_{CLASS_NAMES[c]}": d for c, d in per_class.items()})
        return metrics


def train_stage1(
    data: Path,
    out: Path,
    results: Path,
    cfg: dict[str, Any],
    info: DistInfo,
    resume: bool = True,
    variant: str = "contrastive",
) -> FitResult:
    """Train Stage-1 ``variant`` (`plaque.methods.PRIOR_VARIANTS`) on ``data``'s train/val splits; write
    checkpoints to ``out`` and metrics to ``results``."""
    s1 = prior_stage1(cfg["stage1"], variant)
    seed_everything(cfg["train"]["seed"])  # identical initial weights on every rank
    model: VQAutoencoder = build_vq(s1)
    loss = Stage1Loss(s1, Perceptual(s1["perceptual"]["net"])).to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=s1["optim"]["lr"], betas=tuple(s1["optim"]["betas"]))
    aug = cfg["augment"]
    train_set = SliceDataset(data, "train", aug["rotation_p"], aug["rotation_max_deg"], aug["shift_mm"])
    val_set = SliceDataset(data, "val", stride=cfg["train"]["val_stride"])
    probe_rows = np.sort(np.random.default_rng(PROBE_SEED).permutation(train_set.rows)[:PROBE_SLICES])
    validation = Stage1Validation(loss, train_set.images[probe_rows], train_set.labels[probe_rows])
    fit_cfg = FitConfig.from_params(
        cfg["train"],
        monitor=s1["monitor"],
        mode=MONITOR_MODE[s1["monitor"]],
        out_dir=out,
        live_dir=results / "live",
        resume=resume,
    )
    result = fit(
        model,
        optimizer,
        train_set,
        val_set,
        Stage1Step(loss),
        validation,
        fit_cfg,
        info,
        rare=train_set.has_plaque,
        record={"variant": variant, "config": cfg},
    )
    if info.is_main:
        write_metrics(results / "metrics.json", result, loss.backbone, s1["monitor"], variant)
        log.info(
            "stage 1 done: %d epochs, best %s %.4f at epoch %s",
            result.epochs_run,
            s1["monitor"],
            result.best_score if result.best_score is not None else float("nan"),
            result.best_epoch,
        )
    return result


def write_metrics(path: Path, result: FitResult, backbone: str, monitor: str, variant: str) -> None:
    """The stage's headline figures (best validation), atomically, as JSON."""
    best = result.best_metrics
    write_json_atomic(
        path,
        {
            "monitor": monitor,
            "score": result.best_score,
            "best_epoch": result.best_epoch,
            "recon_l1": best.get("l1"),
            "perplexity": best.get("perplexity"),
            "codes_used": best.get("codes_used"),
            "probe_dice": {k[len("probe_dice_") :]: v for k, v in best.items() if k.startswith("probe_dice_")},
            "variant": variant,
            "perceptual_backbone": backbone,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "world_size": result.world_size,
            "effective_batch_size": result.effective_batch_size,
        },
    )


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.train.stage1", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="preprocessed slices (data/processed)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder (models/stage1)")
    parser.add_argument("--results", type=Path, required=True, help="metrics folder (results/stage1/<variant>)")
    parser.add_argument(
        "--variant",
        default="contrastive",
        choices=sorted(PRIOR_VARIANTS),
        help="Stage-1 variant (default: contrastive, the paper's prior)",
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    return run_stage(
        args,
        lambda cfg, info: train_stage1(
            args.data, args.out, args.results, cfg, info, resume=not args.fresh, variant=args.variant
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
