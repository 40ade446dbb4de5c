"""Time the data stages on this machine: phantom cohort generation and preprocessing.

Runs the two command-line entry points exactly as the pipeline does, on the chosen
profile (default: demo), in a temporary folder, and prints the figures:

    python -m benchmarks.bench_data [--profile demo] [--keep DIR]

Targets on 2 CPU cores (demo profile): generation <= 60 s, preprocessing <= 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plaque.config import load_config, worker_processes

TARGETS_S = {"phantom": 60.0, "preprocess": 30.0}


def timed(args: list[str]) -> float:
    """Run ``python -m <args>`` and return its wall time in seconds (raises on failure)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_data", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument(
        "--keep", type=Path, default=None, help="write the cohort and slices here instead of a temp dir"
    )
    args = parser.parse_args()
    cfg = load_config(profile=args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        raw, processed = work / "raw", work / "processed"
        t_gen = timed(["plaque.data.phantom", "--out", str(raw), "--profile", args.profile])
        t_pre = timed(["plaque.data.preprocess", "--raw", str(raw), "--out", str(processed), "--profile", args.profile])
        summary = json.loads((processed / "summary.json").read_text())
    print(
        f"profile: {args.profile}  cpu cores: {os.cpu_count()}  processes: phantom "
        f"{worker_processes(cfg['phantom']['processes'])}, preprocess {worker_processes(cfg['preprocess']['processes'])}"
    )
    print(f"cohort: {cfg['phantom']['patients']} patients, matrix {cfg['phantom']['matrix']}")
    for name, seconds in (("phantom", t_gen), ("preprocess", t_pre)):
        verdict = "ok" if seconds <= TARGETS_S[name] else "OVER TARGET"
        print(f"{name:>10}: {seconds:6.1f} s  (target <= {TARGETS_S[name]:.0f} s on 2 cores: {verdict})")
    print("patients per split:", summary["patients_per_split"])
    print("slices per split:  ", summary["slices_per_split"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
