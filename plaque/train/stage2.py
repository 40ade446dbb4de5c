"""Stage-2: train the SAM encoder + VQ prior + FAA segmenter (appendix 1.4). The `torchrun` entry point.

    python -m torch.distributed.run --standalone --nproc_per_node N -m plaque.train.stage2 --method ours \\
        --data data/processed --prior models/stage1/contrastive/best.pt --out models/stage2/ours \\
        --results results/stage2/ours --predictions results/predictions/ours [--profile NAME] [--fresh]

Builds `plaque.models.segmenter.PriorSegmenter` (`plaque.models.cat_sam.CatSamSegmenter` for
``cat_sam``) from the ``stage2`` section: the SAM image encoder
(official weights when ``resolve_weights`` finds them, else randomly initialised and recorded as
such); the frozen Stage-1 prior read from ``--prior``; the fusion, decoder and SAM tuning of
``--method`` (`plaque.methods.METHODS`). Trains with AdamW on ``λce · CE + λdice · soft Dice`` (bf16
autocast on CUDA, fp32 on the CPU) through the shared trainer, selecting on the validation macro
Dice (classes 1..4, hard Dice over the whole split). Writes ``OUT/best.pt`` and ``OUT/last.pt``,
``RESULTS/metrics.json`` (best validation Dice, trainable parameters, train and prediction
seconds of this run, a resumed run counting its last leg only), DVCLive curves under
``RESULTS/live`` and, from ``best.pt`` once training is over, one ``PREDICTIONS/<patient>.npz`` per
test patient (``pred`` (N, H, W) uint8 class ids, ``index`` (N,) the manifest rows, in manifest
order). Runs alone too (one process).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from plaque.atomic import atomic_folder
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.data.dataset import SliceDataset
from plaque.data.processed import load_processed
from plaque.errors import InputError
from plaque.methods import METHODS, get_method, method_stage2
from plaque.models.cat_sam import CatSamSegmenter, build_cat_sam
from plaque.models.decoders import ClassTokenDecoder
from plaque.models.lora import configure_tuning
from plaque.models.sam import build_image_encoder, load_sam_image_encoder, load_sam_mask_decoder, resolve_weights
from plaque.models.segmenter import PriorSegmenter, build_segmenter
from plaque.models.vq import VQAutoencoder, build_vq, freeze
from plaque.seg_losses import DiceMeter, SegLoss, macro_dice
from plaque.train.checkpoint import load_checkpoint
from plaque.train.cli import add_common_options, run_stage, write_json_atomic
from plaque.train.distributed import DistInfo
from plaque.train.trainer import FitConfig, FitResult, fit, seed_everything, to_device

log = logging.getLogger("plaque.train.stage2")

MONITOR = "macro_dice"
PREDICT_BATCH = 32


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; a no-op (fp32) on the CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class Stage2Step:
    """One training step: segmentation loss of the logits against the labels."""

    def __init__(self, loss: SegLoss) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], info: DistInfo) -> tuple[Tensor, dict[str, float]]:
        x, labels = batch
        with autocast(info.device):
            logits = model(x)
        return self.loss(logits, labels)


class Stage2Validation:
    """Validation metrics: loss, hard Dice per class and their macro mean over classes 1..4 (NaN-aware)."""

    def __init__(self, loss: SegLoss) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, loader: DataLoader, info: DistInfo) -> dict[str, float]:
        meter = DiceMeter()
        total = 0.0
        for batch in loader:
            x, labels = to_device(batch, info.device)
            with autocast(info.device):
                logits = model(x)
            loss, _ = self.loss(logits, labels)
            total += float(loss) * len(x)
            meter.update(logits.argmax(dim=1), labels)
        scores = meter.scores()
        metrics = {"val_loss": total / len(loader.dataset), MONITOR: macro_dice(scores)}  # type: ignore[arg-type]
        metrics.update({f"dice_{CLASS_NAMES[c]}": float(scores[c]) for c in FOREGROUND})
        return metrics


def _load_into(module: nn.Module, state: Any, path: Path, what: str) -> None:
    """``module.load_state_dict(state)``, strictly; a mismatch is an `InputError` naming ``path``."""
    if not isinstance(state, dict):
        raise InputError(path, f"holds no 'model' state dict; expected {what}")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(e)
        raise InputError(path, f"does not fit the configured model ({first}); check --method and --profile") from None


def load_prior(cfg_stage1: dict[str, Any], path: Path) -> VQAutoencoder:
    """The frozen Stage-1 autoencoder from a ``best.pt`` (``{"model": state_dict, ...}``)."""
    prior = build_vq(cfg_stage1)
    _load_into(prior, load_checkpoint(path).get("model"), path, "a Stage-1 best.pt")
    return freeze(prior)  # type: ignore[return-value]


def build_model(cfg: dict[str, Any], method: str, prior_path: Path | None, *,
                pretrained: bool = True) -> tuple[PriorSegmenter | CatSamSegmenter, str]:
    """The Stage-2 segmenter for ``method`` (`plaque.methods`) and whether its image encoder is
    ``"pretrained"`` or ``"random"``. With SAM weights, a class-token decoder, and CAT-SAM's output
    upscaling, also take SAM's pretrained mask-decoder parts (`load_sam_mask_decoder`).
    ``cat_sam`` is a `CatSamSegmenter` on the frozen encoder, every other method a `PriorSegmenter`.

    With ``pretrained=False`` neither SAM weights nor the Stage-1 checkpoint are read (``prior_path``
    is ignored): the architecture only, for loading a trained Stage-2 checkpoint into.
    """
    spec = get_method(method)
    s2 = method_stage2(cfg["stage2"], method)
    prior = None
    if spec.prior is not None and not pretrained:
        prior = freeze(build_vq(cfg["stage1"]))
    elif spec.prior is not None:
        if prior_path is None:
            raise InputError("--prior", f"method {method!r} needs the Stage-1 checkpoint ({spec.prior} variant)")
        prior = load_prior(cfg["stage1"], prior_path)
    encoder = build_image_encoder(s2["backbone"], input_size=s2["input_size"], patch_size=s2["patch_size"])
    weights = resolve_weights(s2, cfg["profile"]) if pretrained else None
    if weights is not None:
        load_sam_image_encoder(encoder, weights, input_size=s2["input_size"], patch_size=s2["patch_size"])
    elif pretrained and spec.model == "cat_sam":
        log.warning("CAT-SAM keeps SAM FROZEN, here a RANDOMLY INITIALISED image encoder: its random weights "
                    "stay as they are and only the prompt bridge, the HQ-feature parts and the head train, "
                    "so results are not those of CAT-SAM on a pretrained SAM")
    elif pretrained and s2["sam_tuning"] != "full":
        log.warning("stage2.sam_tuning is %s on a RANDOMLY INITIALISED encoder: its random weights stay as they "
                    "are (only %s); use sam_tuning: full without pretrained weights", s2["sam_tuning"],
                    "the LoRA updates train" if s2["sam_tuning"] == "lora" else "nothing in it trains")
    configure_tuning(encoder, s2["sam_tuning"], s2["lora_rank"])
    if spec.model == "cat_sam":
        cat_sam = build_cat_sam(s2, encoder)
        if weights is not None:
            load_sam_mask_decoder(cat_sam, weights)  # its output_upscaling.*
        return cat_sam, "random" if weights is None else "pretrained"
    model = build_segmenter(s2, encoder, prior, fusion=spec.fusion)
    if weights is not None and isinstance(model.decoder, ClassTokenDecoder):
        load_sam_mask_decoder(model.decoder, weights)
    return model, "random" if weights is None else "pretrained"


def load_trained(cfg: dict[str, Any], method: str, checkpoint: Path) -> PriorSegmenter | CatSamSegmenter:
    """The trained segmenter of ``method`` from its Stage-2 ``best.pt`` (prior included), in eval mode."""
    model, _ = build_model(cfg, method, None, pretrained=False)
    _load_into(model, load_checkpoint(checkpoint).get("model"), checkpoint, "a Stage-2 best.pt")
    return model.eval()


def train_stage2(data: Path, prior_path: Path | None, out: Path, results: Path, predictions: Path,
                 cfg: dict[str, Any], info: DistInfo, method: str = "ours", resume: bool = True) -> FitResult:
    """Train Stage-2 on ``data``'s train/val splits; write checkpoints, metrics and test predictions."""
    s2 = cfg["stage2"]
    seed_everything(cfg["train"]["seed"])  # identical initial weights on every rank
    model, backbone_weights = build_model(cfg, method, prior_path)
    optimizer = torch.optim.AdamW(list(model.trainable_parameters()), lr=s2["optim"]["lr"],
                                  weight_decay=s2["optim"]["weight_decay"])
    loss = SegLoss(ce_weight=s2["loss"]["ce"], dice_weight=s2["loss"]["dice"])
    aug = cfg["augment"]
    train_set = SliceDataset(data, "train", aug["rotation_p"], aug["rotation_max_deg"])
    val_set = SliceDataset(data, "val")
    fit_cfg = FitConfig.from_params(cfg["train"], monitor=MONITOR, mode="max", out_dir=out,
                                    live_dir=results / "live", resume=resume)
    started = time.perf_counter()
    result = fit(model, optimizer, train_set, val_set, Stage2Step(loss), Stage2Validation(loss), fit_cfg, info,
                 rare=train_set.has_plaque)
    train_seconds = time.perf_counter() - started
    if info.is_main:
        if result.best_epoch is None:
            raise InputError(out, "no validation improved on NaN, so there is no best.pt to predict with")
        _load_into(model, load_checkpoint(result.best_path).get("model"), result.best_path, "a Stage-2 best.pt")
        started = time.perf_counter()
        predict_test(model, data, predictions, info.device)
        tuned = method_stage2(s2, method)
        write_metrics(results / "metrics.json", result, {
            "method": method, "backbone": s2["backbone"], "backbone_weights": backbone_weights,
            "sam_tuning": tuned["sam_tuning"], "decoder": tuned["decoder"], "prior": get_method(method).prior,
            "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
            "train_seconds": round(train_seconds, 1), "predict_seconds": round(time.perf_counter() - started, 1),
            "device": info.device.type})
        log.info("stage 2 (%s) done: %d epochs, best macro Dice %.4f at epoch %s", method, result.epochs_run,
                 result.best_score, result.best_epoch)
    return result


def _finite(value: Any) -> Any:
    """JSON has no NaN: ``None`` for a NaN float."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_metrics(path: Path, result: FitResult, run: dict[str, Any]) -> None:
    """The stage's headline figures (best validation), atomically, as JSON."""
    best = result.best_metrics
    metrics = {
        "monitor": MONITOR, "macro_dice": _finite(result.best_score), "best_epoch": result.best_epoch,
        "dice": {CLASS_NAMES[c]: _finite(best.get(f"dice_{CLASS_NAMES[c]}")) for c in FOREGROUND},
        "val_loss": best.get("val_loss"), "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
        "world_size": result.world_size, "effective_batch_size": result.effective_batch_size, **run,
    }
    write_json_atomic(path, metrics)


@torch.no_grad()
def predict_test(model: nn.Module, data: Path, out: Path, device: torch.device) -> list[str]:
    """Write ``out/<patient>.npz`` (``pred``, ``index``) for every test patient; returns the patients.

    The folder is filled under a temporary name and renamed into place, so ``out`` holds either the
    previous predictions or a complete new set.
    """
    processed = load_processed(data)
    manifest = processed.manifest
    patients = processed.patients("test")
    if not patients:
        raise InputError(data, "no slices in split 'test'")
    model.to(device).eval()
    with atomic_folder(Path(out)) as tmp:
        for patient in patients:
            rows = manifest.index[(manifest["split"] == "test") & (manifest["patient"] == patient)]
            rows = rows.to_numpy(dtype=np.int64)
            preds = []
            for start in range(0, len(rows), PREDICT_BATCH):
                chunk = rows[start:start + PREDICT_BATCH]
                x = torch.from_numpy(np.asarray(processed.images[chunk], dtype=np.float32))[:, None].to(device)
                with autocast(device):
                    logits = model(x)
                preds.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
            np.savez(tmp / f"{patient}.npz", pred=np.concatenate(preds), index=rows)
    return patients


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.train.stage2", description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ours", choices=sorted(METHODS),
                        help="method (default: ours); see plaque.methods")
    parser.add_argument("--data", type=Path, required=True, help="preprocessed slices (data/processed)")
    parser.add_argument("--prior", type=Path, default=None,
                        help="Stage-1 checkpoint of the method's variant (models/stage1/<variant>/best.pt)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder (models/stage2/<method>)")
    parser.add_argument("--results", type=Path, required=True, help="metrics folder (results/stage2/<method>)")
    parser.add_argument("--predictions", type=Path, required=True,
                        help="test predictions folder (results/predictions/<method>)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    return run_stage(args, lambda cfg, info: train_stage2(
        args.data, args.prior, args.out, args.results, args.predictions, cfg, info, method=args.method,
        resume=not args.fresh))


if __name__ == "__main__":
    sys.exit(main())
