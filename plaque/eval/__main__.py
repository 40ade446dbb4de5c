"""Score saved test predictions: ``python -m plaque.eval --pred DIR (--data DIR | --raw DIR) --out DIR``.

    --pred     results/predictions (one folder per method) or one method's folder
    --data     the processed dataset whose test split the predictions cover (data/processed), or
    --raw      a raw cohort, preprocessed here with every patient a test patient (as `plaque.predict` does)
    --out      results folder (results/eval: JSON only); --tables reports/tables (summary.md, CSVs);
               --figures reports/figures; --runs results/stage2 (optional: training curves and backbone
               weights per method); --readme README.md (optional: rewrite its results section with the
               table of summary.md)

Prints ``error: <file>: <problem>`` and exits with 2 on bad input, leaving the outputs as they were.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from plaque.cli import add_config_options, run_cli
from plaque.config import load_config
from plaque.data.preprocess import preprocess
from plaque.errors import InputError
from plaque.eval.report import summary_markdown, update_readme
from plaque.eval.run import evaluate
from plaque.predict import TEST_ONLY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plaque.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True, help="predictions: folder of method folders, or one")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="processed dataset with the ground truth (test split)")
    source.add_argument("--raw", type=Path, help="raw cohort with labels (every patient scored)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (results/eval)")
    parser.add_argument("--tables", type=Path, default=None, help="tables folder (reports/tables)")
    parser.add_argument("--figures", type=Path, default=None, help="figures folder (reports/figures)")
    parser.add_argument("--runs", type=Path, default=None, help="training runs (results/stage2)")
    parser.add_argument("--readme", type=Path, default=None, help="README whose results section to rewrite")
    add_config_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # update_readme's ValueError names the README already
    return run_cli(lambda: _evaluate(args), errors=(InputError, ValueError))


def _evaluate(args: argparse.Namespace) -> None:
    """Score, write the outputs, rewrite the README when asked, print each method's macro Dice."""
    cfg = load_config(args.params, args.profile)
    if args.readme is not None and not args.readme.is_file():
        raise InputError(args.readme, "README not found")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.raw is not None:
            data = Path(tmp) / "processed"
            prep = {**cfg["preprocess"], "split": TEST_ONLY}
            preprocess(args.raw, data, prep, prep["processes"])
        summary = evaluate(args.pred, data, args.out, args.figures, cfg, runs=args.runs, tables_dir=args.tables)
    if args.readme is not None:
        update_readme(args.readme, summary_markdown(summary))
    for m in summary["methods"].values():
        md = m["macro_dice"]
        print(f"{m['label']}: macro Dice {md['mean']:.3f} [{md['low']:.3f}, {md['high']:.3f}]"
              if md["mean"] is not None else f"{m['label']}: macro Dice n/a")


if __name__ == "__main__":
    sys.exit(main())
