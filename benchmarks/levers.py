"""The lever table: one row per `python -m benchmarks` run of one method, each with one lever changed.

    python -m benchmarks.levers RUN.json [RUN.json ...] [--method ours]

Reads the JSON that `python -m benchmarks` writes (its ``steps``) and prints, per run: its
levers (micro-batch, attention kernel, AdamW, torch.compile), the training step time, images/s, the reference
TFLOP/s (the work SAM's architecture needs, `benchmarks.flops`), MFU against the device's dense peak, and the
peak memory of a fresh process. ``bash benchmarks/gpu_check.sh --levers`` makes the runs and this table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import format_table, gib
from benchmarks.steps import Levers
from plaque.errors import InputError

COLUMNS = ("run", "batch", "attention", "AdamW", "compile", "train ms", "img/s", "ref TFLOP/s", "MFU", "peak GiB")


def lever_row(path: Path, method: str) -> tuple[str, ...]:
    """The table's row for the run whose JSON is ``path``.

    Raises:
        InputError: the file is unreadable, not a benchmark run's JSON, or has no figures for ``method``.
    """
    try:
        report: dict[str, Any] = json.loads(path.read_text())
        methods, levers = report["steps"]["methods"], Levers(**report["steps"]["levers"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(
            path, f"not the JSON of a `python -m benchmarks` run that records its levers ({e!r})"
        ) from None
    if method not in methods:
        raise InputError(path, f"no figures for method {method!r} (it has {sorted(methods)})")
    figures = methods[method]
    memory = figures["memory"]
    return (
        path.stem,
        str(figures["batch_size"]),
        *levers.labels(),
        f"{figures['train_step_s'] * 1e3:.1f}",
        f"{figures['train_images_per_s']:.1f}",
        f"{figures['train_tflops_per_s']:.3g}",
        "n/a" if figures["train_mfu"] is None else f"{figures['train_mfu']:.1%}",
        "n/a" if memory is None else f"{gib(memory['peak_bytes']):.2f}",
    )


def lever_table(paths: list[Path], method: str) -> str:
    """The rows of `lever_row` for every file of ``paths``, in their order, as a text table."""
    return format_table(COLUMNS, [lever_row(p, method) for p in paths])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files written by python -m benchmarks --json")
    parser.add_argument("--method", default="ours", help="the method whose figures to show (default ours)")
    args = parser.parse_args(argv)
    try:
        print(lever_table(args.runs, args.method))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
