"""Score saved test predictions: ``python -m plaque.eval --pred DIR [--data DIR | --raw DIR] --out DIR``.

    --pred     results/predictions (one folder per method), one method's folder, or the folder
               ``python -m plaque.predict --out`` wrote (its predictions/ and processed/ are used)
    --data     the processed dataset whose test split the predictions cover (data/processed), or
    --raw      a raw cohort, preprocessed here with every patient a test patient (as `plaque.predict` does);
               neither: --pred's processed/
    --out      results folder (results/eval: JSON only); --tables reports/tables (summary.md, CSVs);
               --figures reports/figures; --runs results/stage2 (optional: training curves and backbone
               weights per method)

Prints ``error: <file>: <problem>`` and exits with 2 on bad input, leaving the outputs as they were.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from plaque.cli import add_config_options, command_line, run_cli
from plaque.config import load_config
from plaque.data.preprocess import TEST_ONLY, preprocess
from plaque.errors import InputError
from plaque.eval.run import evaluate

PREDICTIONS, PROCESSED = "predictions", "processed"  # the layout `python -m plaque.predict --out` writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        **command_line(
            "plaque.eval",
            "plaque-eval",
            "--pred results/predictions --data data/processed --out results/eval",
            "--pred scratch/cohort2 --out scratch/cohort2/eval",
        ),
    )
    parser.add_argument("--pred", type=Path, required=True, help="predictions: folder of method folders, or one")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="processed dataset with the ground truth (test split)")
    source.add_argument("--raw", type=Path, help="raw cohort with labels (every patient scored)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (results/eval)")
    parser.add_argument("--tables", type=Path, default=None, help="tables folder (reports/tables)")
    parser.add_argument("--figures", type=Path, default=None, help="figures folder (reports/figures)")
    parser.add_argument("--runs", type=Path, default=None, help="training runs (results/stage2)")
    parser.add_argument("--stage1-runs", type=Path, default=None, help="Stage-1 runs (results/stage1)")
    add_config_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return run_cli(lambda: _evaluate(args), errors=(InputError, ValueError))


def _evaluate(args: argparse.Namespace) -> None:
    """Score, write the outputs, print each method's macro Dice."""
    cfg = load_config(args.params, args.profile)
    pred, data = args.pred, args.data
    if (pred / PREDICTIONS).is_dir():  # the folder `python -m plaque.predict --out` writes
        pred = pred / PREDICTIONS
        if data is None and args.raw is None and (args.pred / PROCESSED).is_dir():
            data = args.pred / PROCESSED
    if data is None and args.raw is None:
        raise InputError(args.pred, f"holds no {PROCESSED}/ to score against; pass --data or --raw")
    with tempfile.TemporaryDirectory() as tmp:
        if args.raw is not None:
            data = Path(tmp) / "processed"
            prep = {**cfg["preprocess"], "split": TEST_ONLY}
            preprocess(args.raw, data, prep, prep["processes"])
        summary = evaluate(
            pred,
            data,
            args.out,
            args.figures,
            cfg,
            runs=args.runs,
            stage1_runs=args.stage1_runs,
            tables_dir=args.tables,
        )
    for m in summary["methods"].values():
        md = m["macro_dice"]
        print(
            f"{m['label']}: macro Dice {md['mean']:.3f} [{md['low']:.3f}, {md['high']:.3f}]"
            if md["mean"] is not None
            else f"{m['label']}: macro Dice n/a"
        )


if __name__ == "__main__":
    sys.exit(main())
