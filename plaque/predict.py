"""Predict a labelled cohort the models never saw: preprocess it (every patient a test patient) and predict.

    python -m plaque.predict --method ours --raw DIR --out DIR [--model models/stage2/ours/best.pt]
                             [--params FILE] [--profile NAME] [--device cpu|cuda]

``DIR`` (``--raw``) is the raw layout of `plaque.io` (DICOM series or NIfTI/NRRD volume, label volume,
centerlines per patient). Writes

    OUT/processed/                 the cross-sections, as `plaque.data.preprocess` writes them, all in split "test"
    OUT/predictions/<method>/      one <patient>.npz per patient (``pred`` (N, H, W) uint8, ``index`` (N,))

cut with the cross-section settings the model was trained on (read from its self-contained ``best.pt``;
the rest of the ``preprocess`` section from params) and predicted through `plaque.inference`, the same
path every method's test prediction takes. Score them with ``python -m plaque.eval --pred OUT --out DIR``.
Both output folders are replaced atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from plaque.cli import add_config_options, add_device_option, command_line, resolve_device, run_cli
from plaque.config import load_config
from plaque.data.preprocess import TEST_ONLY, preprocess
from plaque.data.processed import load_processed
from plaque.errors import InputError
from plaque.inference import load_predictor, predict_split
from plaque.methods import METHODS

log = logging.getLogger("plaque.predict")


def predict_cohort(raw: Path, out: Path, method: str, checkpoint: Path, cfg: dict, device: torch.device) -> list[str]:
    """Preprocess ``raw`` into ``out/processed`` (all patients in "test") and write
    ``out/predictions/<method>/<patient>.npz`` with the trained ``method`` of ``checkpoint``; returns the
    patients' pseudonyms."""
    if not Path(checkpoint).is_file():
        raise InputError(checkpoint, f"trained {method} model not found; train it first (dvc repro) or pass --model")
    predictor = load_predictor(checkpoint, device, cfg["profile"])
    if predictor.method != method:
        raise InputError(checkpoint, f"is a trained {predictor.method} model, not {method}; check --method and --model")
    prep = {**cfg["preprocess"], **predictor.preprocess, "split": TEST_ONLY}
    preprocess(raw, out / "processed", prep, prep["processes"])
    target = out / "predictions" / method
    patients = predict_split(predictor, load_processed(out / "processed"), "test", target)
    log.info("predicted %d patient(s) with %s into %s", len(patients), predictor.method, target)
    return patients


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        **command_line("plaque.predict", "plaque-predict", "--method ours --raw data/cohort2 --out scratch/cohort2"),
    )
    parser.add_argument("--method", default="ours", choices=sorted(METHODS), help="trained method (default: ours)")
    parser.add_argument("--raw", type=Path, required=True, help="raw cohort folder (one sub-folder per patient)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--model", type=Path, default=None, help="trained model (default: models/stage2/<method>/best.pt)"
    )
    add_config_options(parser)
    add_device_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    checkpoint = args.model or Path("models/stage2") / args.method / "best.pt"

    def run() -> None:
        predict_cohort(
            args.raw,
            args.out,
            args.method,
            checkpoint,
            load_config(args.params, args.profile),
            resolve_device(args.device),
        )

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
