"""nnU-Net's training batches as its augmentation makes them, without the network: the floor that the
augmentation workers put under an nnU-Net iteration on any GPU.

    python -m benchmarks.nnunet_loader [--work models/stage2/nnunet] [--batches 60] [--warmup 5]
                                       [--params FILE] [--profile NAME] [--json results/bench/nnunet_loader.json]

WORK is the folder of a finished ``nnunet`` stage (`plaque.baselines.nnunet`: nnU-Net's plans and
preprocessed dataset; nothing is written there). A child process with that stage's nnU-Net environment and
the profile's trainer settings builds the training loader of
the trainer we train with (`plaque.baselines.nnunet.trainer.nnUNetTrainer_Plaque`, its planned batch and
patch, its augmentation) with the augmentation in the child itself (nnU-Net's single-threaded augmenter,
``nnUNet_n_proc_DA=0``) on one thread, and times ``--batches`` batches after ``--warmup``.

With N augmentation workers (``nnunet.processes``) an iteration cannot take less than that time / N,
however fast the GPU: the table gives that floor for the profile's training iterations (epochs x
iterations per epoch; validation batches come on top) at 1 to 16 workers. It assumes that the workers
scale perfectly, each on a core of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import format_table, machine_info
from plaque.atomic import write_json_atomic
from plaque.baselines.nnunet.run import CONFIGURATION, FOLD, nnunet_env
from plaque.baselines.nnunet.settings import Settings, from_config
from plaque.baselines.nnunet.trainer import SETTINGS_ENV, nnUNetTrainer_Plaque
from plaque.cli import add_config_options
from plaque.config import load_config
from plaque.paths import repo_root

DEFAULT_WORK = Path("models/stage2/nnunet")
DEFAULT_JSON = Path("results/bench/nnunet_loader.json")
WORKERS = (1, 2, 4, 8, 12, 16)


def time_batches(dataset: str, batches: int, warmup: int) -> dict[str, Any]:
    """In a process whose environment is a ``nnunet`` stage's (`nnunet_env`, ``nnUNet_n_proc_DA=0``): the
    seconds per training batch of ``nnUNetTrainer_Plaque``'s loader on ``dataset`` (``DatasetXXX_<name>``),
    and the batch's shape ``(B, C, H, W)``."""
    torch.set_num_threads(1)
    folder = Path(os.environ["nnUNet_preprocessed"]) / dataset
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnU-Net's run_training adds before it builds a trainer
    dataset_json = json.loads((folder / "dataset.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's own log lines
        trainer = nnUNetTrainer_Plaque(plans, CONFIGURATION, FOLD, dataset_json, torch.device("cpu"))
        trainer.initialize()  # the batch size, from the plans
        loader, _ = trainer.get_dataloaders()
    for _ in range(warmup):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    return {"seconds_per_batch": (time.perf_counter() - start) / batches, "batch_shape": list(batch["data"].shape)}


def measure(work: Path, settings: Settings, batches: int, warmup: int) -> dict[str, Any]:
    """`time_batches` in a child process with ``work``'s nnU-Net environment.

    Raises:
        SystemExit: ``work`` is not a finished ``nnunet`` stage's folder, or the child failed (its output's end).
    """
    if not (work / "nnUNet_preprocessed" / settings.dataset).is_dir():
        raise SystemExit(
            f"error: {work}: no nnUNet_preprocessed folder of {settings.dataset}; run the nnunet stage first "
            "(dvc repro nnunet)"
        )
    call = f"b.time_batches({settings.dataset!r}, {batches}, {warmup})"
    code = f"import json, benchmarks.nnunet_loader as b; print(json.dumps({call}))"
    with tempfile.TemporaryDirectory() as tmp:  # the trainer's log and settings: nothing written into work
        settings_file = Path(tmp) / "trainer_settings.json"
        settings_file.write_text(json.dumps(settings.trainer_settings))
        env = {
            **nnunet_env(work.resolve(), settings, "cpu"),
            "nnUNet_results": tmp,
            SETTINGS_ENV: str(settings_file),
            "nnUNet_n_proc_DA": "0",
        }
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=repo_root())
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise SystemExit(f"error: timing nnU-Net's loader on {work} failed:\n{tail}")
    return json.loads(proc.stdout.splitlines()[-1])


def floors(seconds_per_batch: float, settings: Settings) -> list[dict[str, float]]:
    """The seconds that the schedule's training batches take at least with each count of `WORKERS`."""
    batches = settings.epochs * settings.iterations_per_epoch
    return [{"workers": n, "floor_s": batches * seconds_per_batch / n} for n in WORKERS]


def main(argv: list[str] | None = None) -> int:
    """Time the batches, print the floors, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nnunet_loader", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"an nnunet stage's folder ({DEFAULT_WORK})")
    parser.add_argument("--batches", type=int, default=60, help="batches timed (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="batches before the timing (default 5)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    add_config_options(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.params, args.profile)
    settings = from_config(cfg)
    figures = measure(args.work, settings, args.batches, args.warmup)
    rows = floors(figures["seconds_per_batch"], settings)
    schedule = f"{settings.epochs} x {settings.iterations_per_epoch}"
    print(
        f"nnU-Net augmentation, one worker on one thread: {1000 * figures['seconds_per_batch']:.1f} ms per batch "
        f"{tuple(figures['batch_shape'])} ({args.batches} batches after {args.warmup}; {args.work})"
    )
    print(f"floor of profile {cfg['profile']}'s {schedule} training batches (nnunet.processes: {settings.processes}):")
    print(format_table(("workers", "seconds at least"), [(r["workers"], f"{r['floor_s']:.0f}") for r in rows]))
    write_json_atomic(
        args.json,
        {
            "machine": machine_info(torch.device("cpu"), repo_root()),
            "profile": cfg["profile"],
            **figures,
            "schedule": settings.schedule,
            "floors": rows,
        },
    )
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
