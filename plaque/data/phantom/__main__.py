"""Command line: generate the phantom cohort in the raw layout.

``python -m plaque.data.phantom --out DIR [--patients N] [--seed S] [--params FILE] [--profile NAME]
[--processes P|auto]``; unset options come from the resolved ``phantom`` config section.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from plaque.cli import add_config_options, command_line, run_cli
from plaque.config import load_config
from plaque.data.phantom.cohort import COHORT_FILE, generate_cohort
from plaque.errors import InputError


def processes_arg(value: str) -> int | str:
    """``--processes``: ``auto`` or an integer (its sign checked by `generate_cohort`)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Generate a cohort; prints one summary line, or ``error: ...`` with exit code 2 on bad input."""
    parser = argparse.ArgumentParser(
        description="Generate the synthetic CCTA phantom cohort (raw layout).",
        **command_line("plaque.data.phantom", "plaque-phantom", "--out scratch/phantom --patients 4 --seed 0"),
    )
    parser.add_argument("--out", type=Path, required=True, help="cohort folder (replaced atomically)")
    parser.add_argument("--patients", type=int, default=None, help="number of patients (default: phantom.patients)")
    parser.add_argument("--seed", type=int, default=None, help="cohort seed (default: phantom.seed)")
    add_config_options(parser)
    parser.add_argument(
        "--processes",
        type=processes_arg,
        default=None,
        help="worker processes, or auto for one per CPU core (default: phantom.processes)",
    )
    args = parser.parse_args(argv)

    def run() -> None:
        cfg = load_config(args.params, args.profile)["phantom"]
        patients = cfg["patients"] if args.patients is None else args.patients
        seed = cfg["seed"] if args.seed is None else args.seed
        processes = cfg["processes"] if args.processes is None else args.processes
        if seed < 0:
            raise InputError("seed", f"expected a non-negative integer, got {seed}")
        t0 = time.perf_counter()
        cases = generate_cohort(args.out, patients, seed, cfg, processes)
        mix: dict[str, int] = {}
        for c in cases:
            mix[c["case_type"]] = mix.get(c["case_type"], 0) + 1
        print(
            f"wrote {len(cases)} patients to {args.out} ({args.out / COHORT_FILE}) in "
            f"{time.perf_counter() - t0:.1f} s; case mix {mix}"
        )

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
