"""Segment a cohort the models never saw: preprocess it (every patient a test patient) and predict.

    python -m plaque.predict --method ours --raw DIR --out DIR [--model models/stage2/ours/best.pt]
                             [--params FILE] [--profile NAME]

``DIR`` (``--raw``) is the raw layout of `plaque.io` (DICOM series, label volume, centerlines per
patient). Writes

    OUT/processed/                 the cross-sections, as `plaque.data.preprocess` writes them, all in split "test"
    OUT/predictions/<method>/      one <patient>.npz per patient (``pred`` (N, H, W) uint8, ``index`` (N,))

with the same preprocessing settings (``preprocess`` section) and the trained model of ``--method``
(a Stage-2 ``best.pt``, prior included; the configuration must be the one it was trained with).
Score them with ``python -m plaque.eval --pred OUT/predictions --data OUT/processed --out DIR``.
Both output folders are replaced atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from plaque.cli import add_config_options, run_cli
from plaque.config import load_config
from plaque.data.preprocess import preprocess
from plaque.errors import InputError
from plaque.train.stage2 import METHODS, load_trained, predict_test

log = logging.getLogger("plaque.predict")
TEST_ONLY = {"test": 1.0}


def predict_cohort(raw: Path, out: Path, method: str, checkpoint: Path, cfg: dict, device: torch.device) -> list[str]:
    """Preprocess ``raw`` into ``out/processed`` (all patients in "test") and write
    ``out/predictions/<method>/<patient>.npz``; returns the patients' pseudonyms."""
    if not Path(checkpoint).is_file():
        raise InputError(checkpoint, f"trained {method} model not found; train it first (dvc repro) or pass --model")
    model = load_trained(cfg, method, checkpoint)
    prep = {**cfg["preprocess"], "split": TEST_ONLY}
    preprocess(raw, out / "processed", prep, prep["processes"])
    patients = predict_test(model, out / "processed", out / "predictions" / method, device)
    log.info("predicted %d patient(s) with %s into %s", len(patients), method, out / "predictions" / method)
    return patients


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ours", choices=sorted(METHODS), help="trained method (default: ours)")
    parser.add_argument("--raw", type=Path, required=True, help="raw cohort folder (one sub-folder per patient)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", type=Path, default=None,
                        help="Stage-2 checkpoint (default: models/stage2/<method>/best.pt)")
    add_config_options(parser, "profile the model was trained with (default: the file's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    checkpoint = args.model or Path("models/stage2") / args.method / "best.pt"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def run() -> None:
        predict_cohort(args.raw, args.out, args.method, checkpoint, load_config(args.params, args.profile), device)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
