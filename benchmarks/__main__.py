"""Benchmark harness: step cost per method, data-loader headroom, FAA scaling, all measured one way.

    python -m benchmarks [--device cpu|cuda] [--profile demo] [--batch-size N] [--threads N] [--steps N] [--warmup N]
                         [--methods ours,no_prior,...] [--attention folded|flex] [--adamw fused|default]
                         [--compile default|reduce-overhead|max-autotune] [--skip-loader] [--skip-faa] [--faa-max-grid 64]
                         [--faa-batch 1] [--data data/processed] [--json results/bench/benchmarks.json] [--repro]

1. Steps (`benchmarks.steps`): training step and inference time, images/s and peak memory of each
   method our Stage-2 trainer trains (`plaque.methods.stage2_methods`, default: all), and their ratios,
   with the levers asked for (`benchmarks.steps.Levers`: attention kernel, fused AdamW, torch.compile).
2. Loader (`benchmarks.loader`): one epoch of the augmented training loader against the images/s
   of a training step of `ours`. Needs ``--data`` (generated from the profile's phantom cohort into a
   temporary folder when missing).
3. FAA scaling (`benchmarks.faa_scaling`): one FAA block against an explicit attention up to
   ``--faa-max-grid``² tokens.
4. With ``--repro`` only: `dvc repro` per stage in a fresh clone set to ``--profile`` (`benchmarks.repro_times`;
   many minutes).

Prints one table per part, headed by the machine, torch version, profile and date, then the targets
(`TARGETS`) with ok / OVER (a ceiling exceeded) / UNDER (a floor missed) / n/a (another setting),
and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ensure_processed, format_table, gib, machine_info, resolve_device
from benchmarks.faa_scaling import FaaReport, faa_lines, faa_scaling, grids_up_to
from benchmarks.loader import TARGET_HEADROOM, LoaderFigures, loader_throughput
from benchmarks.repro_times import repro_lines, repro_times
from benchmarks.steps import STEPS, TARGET_OVERHEAD, WARMUP, Levers, StepReport, benchmark_steps, check_methods
from plaque.allocator import keep_heap
from plaque.atomic import write_json_atomic
from plaque.config import load_config
from plaque.methods import stage2_methods
from plaque.models.attention import KERNELS
from plaque.paths import repo_root

DEFAULT_JSON = Path("results/bench/benchmarks.json")
GPU_MEMORY_LIMIT = 32 * 2**30  # per process, paper profile: the 32 GB of the paper's V100s
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes
ADAMW = ("fused", "default")  # AdamW implementations: fused=True, or PyTorch's default (foreach on CUDA)


@dataclass(frozen=True)
class Target:
    """A limit on one figure, which applies on one profile and device (``None``: any)."""

    name: str
    limit: float
    ceiling: bool
    unit: str
    profile: str | None = None
    device: str | None = None

    def show(self, value: float) -> str:
        """``value`` in this target's unit."""
        if self.unit == "%":
            return f"{value:+.1%}"
        if self.unit == "GiB":
            return f"{gib(value):.2f} GiB"
        return f"{value:.1f}×"

    def judge(self, value: float | None, profile: str, device: torch.device) -> dict[str, Any]:
        """The target, ``value`` and its verdict: ok, OVER / UNDER, or n/a (not measured or another setting)."""
        applies = (self.profile in (None, profile)) and (self.device in (None, device.type))
        if value is None or not applies:
            verdict = "n/a"
        else:
            met = value <= self.limit if self.ceiling else value >= self.limit
            verdict = "ok" if met else ("OVER" if self.ceiling else "UNDER")
        return {
            "name": self.name,
            "value": value,
            "limit": self.limit,
            "ceiling": self.ceiling,
            "unit": self.unit,
            "profile": self.profile,
            "device": self.device,
            "applies": applies,
            "verdict": verdict,
        }


TARGETS = {
    "overhead": Target(
        "prior + FAA overhead (ours / no_prior - 1)",
        TARGET_OVERHEAD,
        ceiling=True,
        unit="%",
        profile="demo",
        device="cpu",
    ),
    "headroom": Target("loader headroom (loader / ours images/s)", TARGET_HEADROOM, ceiling=False, unit="×"),
    "gpu_memory": Target(
        "peak GPU memory per process", GPU_MEMORY_LIMIT, ceiling=True, unit="GiB", profile="paper", device="cuda"
    ),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--profile", default="demo", help="params.yaml profile (default demo)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size_per_gpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the cores)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"timed steps per method (default {STEPS})")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"untimed steps first (default {WARMUP})")
    parser.add_argument("--methods", default=",".join(stage2_methods()), help="comma-separated (default: all)")
    parser.add_argument(
        "--attention",
        choices=KERNELS,
        default="folded",
        help="SAM attention kernel (plaque.models.attention): folded channels (default) or flex attention",
    )
    parser.add_argument(
        "--adamw",
        choices=ADAMW,
        default="fused",
        help="AdamW's implementation: fused (default, what Stage-2 training uses) or PyTorch's default",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default=None,
        help="torch.compile the model in this mode (reduce-overhead: with CUDA graphs); default eager",
    )
    parser.add_argument("--skip-loader", action="store_true", help="leave out the data-loader part")
    parser.add_argument("--skip-faa", action="store_true", help="leave out the FAA scaling part")
    parser.add_argument("--faa-max-grid", type=int, default=64, help="largest FAA grid side (default 64)")
    parser.add_argument("--faa-batch", type=int, default=1, help="token maps per FAA pass (default 1)")
    parser.add_argument("--data", type=Path, default=Path("data/processed"), help="processed slices for the loader")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    parser.add_argument("--repro", action="store_true", help="also time dvc repro per stage (many minutes)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak for MFU (default: the table of benchmarks.flops for a GPU)",
    )
    return parser.parse_args(argv)


def header_lines(machine: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """Machine, software, profile and date."""
    gpu = f"{machine['gpu']} ({gib(machine['gpu_memory_bytes']):.0f} GiB)" if machine["gpu"] else "none used"
    s2 = cfg["stage2"]
    return [
        f"date {machine['date']}, commit {machine['git_commit']}",
        f"CPU {machine['cpu']} ({machine['cpu_cores']} cores, {machine['torch_threads']} torch threads, load "
        f"average {machine['load_average_1min']:.1f} at the start); GPU {gpu}; device {machine['device']}",
        f"torch {machine['torch']} (CUDA {machine['cuda']}), Python {machine['python']}",
        f"profile {cfg['profile']}: {s2['backbone']} {s2['input_size']}² patch {s2['patch_size']}, sam_tuning "
        f"{s2['sam_tuning']}, decoder {s2['decoder']}; slices {cfg['preprocess']['size']}²",
    ]


def step_lines(report: StepReport) -> list[str]:
    """Per-method figures and the ratios between methods."""
    rows = []
    for f in report.methods.values():
        memory = (
            ("n/a", "n/a")
            if f.memory is None
            else (f"{gib(f.memory.peak_bytes):.2f}", f"{gib(f.memory.peak_bytes - f.memory.base_bytes):.2f}")
        )
        rows.append(
            (
                f.method,
                f"{f.train_step_s * 1e3:.1f}",
                f"{f.train_images_per_s:.1f}",
                f"{f.infer_step_s * 1e3:.1f}",
                f"{f.infer_slices_per_s:.1f}",
                *memory,
                f"{f.train_flops / f.batch_size / 1e9:.2f}",
                "n/a" if f.train_flops_executed is None else f"{f.train_flops_executed / f.batch_size / 1e9:.2f}",
                f"{f.train_tflops_per_s:.3f}",
                "n/a" if f.train_mfu is None else f"{f.train_mfu:.1%}",
                f"{f.infer_flops / f.batch_size / 1e9:.2f}",
                "n/a" if f.infer_mfu is None else f"{f.infer_mfu:.1%}",
            )
        )
    kinds = sorted({f.memory.kind for f in report.methods.values() if f.memory is not None}) or ["not measured"]
    attention, adamw, compile_mode = report.levers.labels()
    lines = [
        f"steps: batch {report.batch_size} of {report.slice_size}² random slices on {report.device}, median of "
        f"{report.steps} after {report.warmup} warm-up, methods in turn; peak memory: {', '.join(kinds)} of a "
        f"fresh process per method (and above what it held before building the model)",
        f"levers: attention {attention}, AdamW {adamw}, compile {compile_mode}",
        format_table(
            (
                "method",
                "train ms",
                "train img/s",
                "infer ms",
                "infer slices/s",
                "peak GiB",
                "above base GiB",
                "train GFLOP/img",
                "executed GFLOP/img",
                "train TFLOP/s",
                "train MFU",
                "infer GFLOP/img",
                "infer MFU",
            ),
            rows,
        ),
    ]
    if report.ratios:
        lines.append(
            format_table(
                ("ratio", "train step", "inference", "peak memory"),
                [
                    (
                        pair,
                        f"{r['train_step']:.3f}",
                        f"{r['infer_step']:.3f}",
                        f"{r['peak_memory']:.3f}" if "peak_memory" in r else "n/a",
                    )
                    for pair, r in report.ratios.items()
                ],
            )
        )
    return lines


def loader_lines(figures: LoaderFigures) -> list[str]:
    """The loader's epoch and its headroom."""
    headroom = "n/a (ours not measured)" if figures.headroom is None else f"{figures.headroom:.1f}×"
    return [
        f"loader: one training epoch, batch {figures.batch_size}, {figures.num_workers} workers, augmentation on",
        format_table(
            ("split", "images", "seconds", "images/s", "ours step images/s", "headroom"),
            [
                (
                    "train",
                    figures.images,
                    f"{figures.seconds:.2f}",
                    f"{figures.images_per_s:.1f}",
                    "n/a" if figures.consumption_images_per_s is None else f"{figures.consumption_images_per_s:.1f}",
                    headroom,
                )
            ],
        ),
    ]


def run_loader(
    args: argparse.Namespace, cfg: dict[str, Any], device: torch.device, batch_size: int, steps: StepReport
) -> LoaderFigures:
    """`loader_throughput` on ``args.data`` (or a generated cohort) against `ours`' training images/s."""
    ours = steps.methods.get("ours")
    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_processed(args.data, cfg, Path(tmp))
        return loader_throughput(data, cfg, batch_size, device, ours.train_images_per_s if ours else None)


def judge_targets(
    steps: StepReport, loader: LoaderFigures | None, profile: str, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Every target of `TARGETS`, judged on its value from this run (``None`` where the part did not run)."""
    pair = steps.ratios.get("ours/no_prior")
    cuda_peaks = [
        f.memory.peak_bytes for f in steps.methods.values() if f.memory is not None and f.memory.kind.startswith("cuda")
    ]
    values = {
        "overhead": pair["train_step"] - 1 if pair else None,
        "headroom": loader.headroom if loader else None,
        "gpu_memory": max(cuda_peaks) if cuda_peaks else None,
    }
    return {key: TARGETS[key].judge(value, profile, device) for key, value in values.items()}


def target_lines(targets: dict[str, dict[str, Any]]) -> list[str]:
    """The judged targets as a table."""
    rows = []
    for key, t in targets.items():
        target = TARGETS[key]
        where = " on ".join(filter(None, (t["profile"], t["device"]))) or "any"
        rows.append(
            (
                t["name"],
                "n/a" if t["value"] is None else target.show(t["value"]),
                f"{'<=' if t['ceiling'] else '>='} {target.show(t['limit'])}",
                where,
                t["verdict"],
            )
        )
    return ["targets", format_table(("target", "value", "limit", "applies to", "verdict"), rows)]


def settings(
    args: argparse.Namespace, device: torch.device, batch_size: int, methods: list[str], heap_kept: bool
) -> dict[str, Any]:
    """The command line's options as run: defaults resolved, paths as text."""
    resolved = {
        **vars(args),
        "device": str(device),
        "batch_size": batch_size,
        "methods": methods,
        "threads": torch.get_num_threads(),
        "heap_kept": heap_kept,
    }
    return {k: str(v) if isinstance(v, Path) else v for k, v in resolved.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print their tables, write the JSON."""
    args = parse_args(argv)
    heap_kept = keep_heap()  # as the pipeline's command lines run
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(profile=args.profile)
    device = resolve_device(args.device)
    methods = check_methods(args.methods.split(","))
    batch_size = args.batch_size or cfg["train"]["batch_size_per_gpu"]
    root = repo_root()
    machine = machine_info(device, root)
    heap = "freed memory kept (plaque.allocator)" if heap_kept else "the C library's defaults"
    print("\n".join([*header_lines(machine, cfg), f"malloc: {heap}"]), end="\n\n", flush=True)
    steps = benchmark_steps(
        cfg,
        methods,
        device,
        batch_size,
        warmup=args.warmup,
        steps=args.steps,
        peak=args.peak_tflops,
        levers=Levers(args.attention, args.adamw, args.compile),
    )
    print("\n".join(step_lines(steps)), end="\n\n", flush=True)
    loader = None if args.skip_loader else run_loader(args, cfg, device, batch_size, steps)
    if loader:
        print("\n".join(loader_lines(loader)), end="\n\n", flush=True)
    faa: FaaReport | None = None
    if not args.skip_faa:
        faa = faa_scaling(
            grids_up_to(args.faa_max_grid), device, batch=args.faa_batch, warmup=args.warmup, steps=args.steps
        )
        print("\n".join(faa_lines(faa)), end="\n\n", flush=True)
    repro = repro_times(root, profile=cfg["profile"]) if args.repro else None
    if repro:
        print("\n".join(repro_lines(repro)), end="\n\n", flush=True)
    targets = judge_targets(steps, loader, cfg["profile"], device)
    print("\n".join(target_lines(targets)))
    write_json_atomic(
        args.json,
        {
            "machine": machine,
            "profile": cfg["profile"],
            "stage2": cfg["stage2"],
            "settings": settings(args, device, batch_size, methods, heap_kept),
            "steps": dataclasses.asdict(steps),
            "loader": dataclasses.asdict(loader) if loader else None,
            "faa": dataclasses.asdict(faa) if faa else None,
            "repro": repro,
            "targets": targets,
        },
    )
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
