"""Stage-2: train the SAM encoder + VQ prior + FAA segmenter (appendix 1.4). The `torchrun` entry point.

    python -m torch.distributed.run --standalone --nproc_per_node N -m plaque.train.stage2 --method ours \\
        --data data/processed --prior models/stage1/contrastive/best.pt --out models/stage2/ours \\
        --results results/stage2/ours --predictions results/predictions/ours [--profile NAME] [--fresh]

Trains the network of ``--method`` (`plaque.models.build.build_model`: the SAM image encoder from the
``stage2`` section, the frozen Stage-1 prior read from ``--prior``, the method's fusion, decoder and SAM
tuning from the registry `plaque.methods`) with AdamW on ``λce · CE + λdice · soft Dice`` (``train.precision``,
`plaque.precision`: ``auto`` is bf16 or fp16 autocast on a GPU, bf16 on a CPU with native bf16, else fp32)
through the shared trainer, selecting on the validation macro Dice (classes 1..4, hard Dice over the
validation cross-sections). Writes ``OUT/best.pt`` (self-contained: weights,
method, resolved configuration, class map and cross-section settings, `plaque.checkpoint.model_record`)
and ``OUT/last.pt``, ``RESULTS/metrics.json`` (best validation Dice, trainable parameters, train and
prediction seconds of this run, a resumed run counting its last leg only), DVCLive curves under
``RESULTS/live`` and, once training is over, chooses ``best.pt``'s plaque floor on the validation split
(`plaque.inference.fit_plaque_floor`, stored in ``best.pt``) and writes the test predictions through the
inference layer (`plaque.inference.predict_split`: one ``PREDICTIONS/<patient>.npz`` per test patient).
Runs alone too (one process).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from plaque.atomic import write_json_atomic
from plaque.checkpoint import load_checkpoint, load_state_strictly, model_record
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.data.dataset import SliceDataset
from plaque.data.processed import load_processed
from plaque.errors import InputError
from plaque.inference import SegmenterPredictor, fit_plaque_floor, predict_split
from plaque.losses.segmentation import DiceMeter, SegLoss, macro_dice
from plaque.methods import METHODS, get_method, method_config, method_stage2
from plaque.models.build import build_model
from plaque.schedule import describe, peak_lr
from plaque.train.cli import add_common_options, run_stage
from plaque.train.distributed import DistInfo
from plaque.train.trainer import FitConfig, FitResult, fit, seed_everything, to_device

log = logging.getLogger("plaque.train.stage2")

MONITOR = "macro_dice"


class Stage2Step:
    """One training step: segmentation loss of the logits against the labels."""

    def __init__(self, loss: SegLoss) -> None:
        self.loss = loss

    def __call__(
        self, model: nn.Module, batch: tuple[Tensor, Tensor], info: DistInfo
    ) -> tuple[Tensor, dict[str, float]]:
        x, labels = batch
        return self.loss(model(x), labels)


class Stage2Validation:
    """Validation metrics: loss, hard Dice per class and their macro mean over classes 1..4 (NaN-aware)."""

    def __init__(self, loss: SegLoss) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
        meter = DiceMeter()
        total = 0.0
        for batch in loader:
            x, labels = to_device(batch, info.device)
            logits = model(x)
            loss, _ = self.loss(logits, labels)
            total += float(loss) * len(x)
            meter.update(logits.argmax(dim=1), labels)
        scores = meter.scores()
        metrics = {"val_loss": total / len(loader.dataset), MONITOR: macro_dice(scores)}  # type: ignore[arg-type]
        metrics.update({f"dice_{CLASS_NAMES[c]}": float(scores[c]) for c in FOREGROUND})
        return metrics


def stage2_optimizer(model: torch.nn.Module, cfg: dict[str, Any], fused: bool | None = True) -> torch.optim.AdamW:
    """AdamW over ``model.trainable_parameters()`` at the run's peak rate (``train.lr``, `plaque.schedule`) and
    ``stage2.optim.weight_decay``. ``fused=True``: one kernel per step, 9-12 % off the demo's CPU step with the same
    update (docs/benchmarks.md); ``None``: PyTorch's default implementation."""
    optim = cfg["stage2"]["optim"]
    return torch.optim.AdamW(
        list(model.trainable_parameters()),
        lr=peak_lr(cfg["train"], optim["lr"]),
        weight_decay=optim["weight_decay"],
        fused=fused,
    )


def stage2_loss(s2: dict[str, Any]) -> SegLoss:
    """The paper's ``λce · CE + λdice · soft Dice`` with the weights of ``stage2.loss``."""
    return SegLoss(ce_weight=s2["loss"]["ce"], dice_weight=s2["loss"]["dice"])


def train_stage2(
    data: Path,
    prior_path: Path | None,
    out: Path,
    results: Path,
    predictions: Path,
    cfg: dict[str, Any],
    info: DistInfo,
    method: str = "ours",
    resume: bool = True,
) -> FitResult:
    """Train Stage-2 on ``data``'s train/val splits; write checkpoints, metrics and test predictions."""
    s2 = cfg["stage2"]
    seed_everything(cfg["train"]["seed"])  # identical initial weights on every rank
    model, backbone_weights = build_model(cfg, method, prior_path)
    optimizer = stage2_optimizer(model, cfg)
    loss = stage2_loss(s2)
    aug = cfg["augment"]
    train_set = SliceDataset(data, "train", aug["rotation_p"], aug["rotation_max_deg"], aug["shift_mm"])
    val_set = SliceDataset(data, "val", stride=cfg["train"]["val_stride"])
    processed = load_processed(data)
    tuned = method_stage2(s2, method)
    run = {
        "method": method,
        "backbone": s2["backbone"],
        "backbone_weights": backbone_weights,
        "sam_tuning": tuned["sam_tuning"],
        "decoder": tuned["decoder"],
        "prior": get_method(method).prior,
        "optimiser": describe(cfg["train"], s2["optim"]),
    }
    fit_cfg = FitConfig.from_params(
        cfg["train"],
        monitor=MONITOR,
        mode="max",
        out_dir=out,
        live_dir=results / "live",
        resume=resume,
        warmup=cfg["train"]["warmup"],
        decay=cfg["train"]["decay"],
    )
    started = time.perf_counter()
    result = fit(
        model,
        optimizer,
        train_set,
        val_set,
        Stage2Step(loss),
        Stage2Validation(loss),
        fit_cfg,
        info,
        rare=train_set.has_plaque,
        record=model_record(method, method_config(cfg, method), processed.preprocess_settings(), run=run),
    )
    train_seconds = time.perf_counter() - started
    if info.is_main:
        if result.best_epoch is None:
            raise InputError(out, "no validation improved on NaN, so there is no best.pt to predict with")
        load_state_strictly(
            model, load_checkpoint(result.best_path).get("model"), result.best_path, "a Stage-2 best.pt"
        )
        started = time.perf_counter()
        predictor = fit_plaque_floor(
            SegmenterPredictor(model, method, processed.preprocess_settings(), info.device),
            processed,
            result.best_path,
        )
        predict_split(predictor, processed, "test", predictions)
        write_metrics(
            results / "metrics.json",
            result,
            {
                **run,
                "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
                "train_seconds": round(train_seconds, 1),
                "predict_seconds": round(time.perf_counter() - started, 1),
                "device": info.device.type,
                "plaque_floor_mm3": predictor.floor.as_record(),
            },
        )
        log.info(
            "stage 2 (%s) done: %d epochs, best macro Dice %.4f at epoch %s",
            method,
            result.epochs_run,
            result.best_score,
            result.best_epoch,
        )
    return result


def _finite(value: Any) -> Any:
    """JSON has no NaN: ``None`` for a NaN float."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_metrics(path: Path, result: FitResult, run: dict[str, Any]) -> None:
    """The stage's headline figures (best validation), atomically, as JSON."""
    best = result.best_metrics
    metrics = {
        "monitor": MONITOR,
        "macro_dice": _finite(result.best_score),
        "best_epoch": result.best_epoch,
        "dice": {CLASS_NAMES[c]: _finite(best.get(f"dice_{CLASS_NAMES[c]}")) for c in FOREGROUND},
        "val_loss": best.get("val_loss"),
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "world_size": result.world_size,
        "effective_batch_size": result.effective_batch_size,
        **run,
    }
    write_json_atomic(path, metrics)


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.train.stage2", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--method",
        default="ours",
        choices=sorted(m for m, spec in METHODS.items() if not spec.external),
        help="method (default: ours); see plaque.methods",
    )
    parser.add_argument("--data", type=Path, required=True, help="preprocessed slices (data/processed)")
    parser.add_argument(
        "--prior",
        type=Path,
        default=None,
        help="Stage-1 checkpoint of the method's variant (models/stage1/<variant>/best.pt)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder (models/stage2/<method>)")
    parser.add_argument("--results", type=Path, required=True, help="metrics folder (results/stage2/<method>)")
    parser.add_argument(
        "--predictions", type=Path, required=True, help="test predictions folder (results/predictions/<method>)"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    return run_stage(
        args,
        lambda cfg, info: train_stage2(
            args.data,
            args.prior,
            args.out,
            args.results,
            args.predictions,
            cfg,
            info,
            method=args.method,
            resume=not args.fresh,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
