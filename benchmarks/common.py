"""What the benchmarks share: a processed dataset to run on, phantom patients of an unseen seed, memory
readings, fresh measurement processes, a description of the machine, and plain-text tables."""

from __future__ import annotations

import argparse
import datetime
import functools
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from plaque.data.phantom import generate_cohort
from plaque.data.preprocess import preprocess
from plaque.io.patient import list_patients

T = TypeVar("T")

# Imported once by the server that forks the measurement processes (see `run_isolated`).
PRELOAD = ("torch", "plaque.train.stage2", "benchmarks.steps")
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
UNSEEN_SEED = 4242  # a phantom seed the pipeline does not use (its phantom.seed is 2026)


def ensure_processed(data: Path, cfg: dict[str, Any], scratch: Path) -> Path:
    """``data`` when it exists, else the profile's phantom cohort generated and preprocessed under ``scratch``."""
    if data.exists():
        return data
    phantom = cfg["phantom"]
    generate_cohort(scratch / "raw", phantom["patients"], phantom["seed"], phantom, phantom["processes"])
    preprocess(scratch / "raw", scratch / "processed", cfg["preprocess"], cfg["preprocess"]["processes"])
    return scratch / "processed"


def add_unseen_cohort_options(parser: argparse.ArgumentParser) -> None:
    """``--patients`` (10) and ``--seed`` (`UNSEEN_SEED`) of the benchmarks that generate phantom patients."""
    parser.add_argument("--patients", type=int, default=10, help="phantom patients to generate")
    parser.add_argument(
        "--seed", type=int, default=UNSEEN_SEED, help="cohort seed (default: one the pipeline does not use)"
    )


@contextmanager
def unseen_cohort(patients: int, seed: int, phantom: dict[str, Any], prefix: str) -> Iterator[tuple[Path, list[Path]]]:
    """``patients`` phantom patients of ``seed`` (``phantom``: the resolved ``phantom`` section) in a temporary
    folder: yields that folder and the patient folders, and removes them after the block."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        raw = Path(tmp) / "raw"
        generate_cohort(raw, patients, seed, phantom, processes=1)
        yield Path(tmp), list_patients(raw)


def gib(n_bytes: float) -> float:
    """Bytes in GiB."""
    return n_bytes / 2**30


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes; ``None`` where there is no such file."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    Linux: ``VmHWM``, the high-water mark of this process's own address space. ``ru_maxrss`` is not
    used there: across fork and exec it keeps the parent's resident size, so a child started from a
    large process would report the parent's. Elsewhere: ``ru_maxrss``.
    """
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux ``VmRSS``; elsewhere the peak, the best available)."""
    rss = _status_bytes("VmRSS")
    return rss if rss is not None else peak_rss_bytes()


def reset_peak_rss() -> None:
    """Lower this process's peak resident memory to its current one (Linux >= 4.0; elsewhere a no-op)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        pass


def memory_kind(device: torch.device) -> str:
    """What `reset_peak` / `peak_bytes` read on ``device``."""
    return "cuda_max_memory_allocated" if device.type == "cuda" else "peak_rss"


def reset_peak(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or this process's resident high-water mark."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def current_bytes(device: torch.device) -> int:
    """Memory held now: bytes allocated by tensors on the GPU, or this process's resident memory."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else current_rss_bytes()


def peak_bytes(device: torch.device) -> int:
    """Peak since `reset_peak`: ``torch.cuda.max_memory_allocated``, or this process's peak resident memory."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()


def peak_memory(device: torch.device) -> str:
    """Peak resident memory of this process, and the peak allocated on the GPU when ``device`` is CUDA."""
    text = f"{gib(peak_rss_bytes()):.2f} GiB resident"
    if device.type == "cuda":
        text += f", {gib(torch.cuda.max_memory_allocated(device)):.2f} GiB on the GPU"
    return text


@functools.cache
def _isolated_context() -> multiprocessing.context.BaseContext:
    """A 'forkserver' context whose server has imported `PRELOAD` (once, on first use)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def _call_with_threads(threads: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with torch using ``threads`` threads."""
    torch.set_num_threads(threads)
    return fn(*args)


def run_isolated(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a fresh process with this process's torch thread count; its return value, or its
    exception re-raised here.

    The process is forked from a server that has imported `PRELOAD` and done nothing else, so every
    measurement starts from the same state, with nothing of this process (models, freed heap, CUDA
    context) in it, and without paying the imports each time. ``fn`` must be a module-level function.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_isolated_context()) as pool:
        return pool.submit(_call_with_threads, torch.get_num_threads(), fn, *args).result()


def resolve_device(name: str | None) -> torch.device:
    """``"cpu"`` or ``"cuda"`` (the current GPU); ``None`` is CUDA when available, else the CPU."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device is available")
    return torch.device(name, torch.cuda.current_device()) if name == "cuda" else torch.device("cpu")


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(root: Path) -> str | None:
    """``HEAD`` of the repository at ``root``, with ``+dirty`` when tracked files changed; ``None`` outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info(device: torch.device, root: Path) -> dict[str, Any]:
    """The machine and software a measurement ran on, and when; the load average shows whether other work
    competed for the CPU (timings taken on a busy machine are not comparable)."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "gpu": None,
        "gpu_memory_bytes": None,
        "git_commit": _git_commit(root),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory)
    return info


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headers in aligned columns: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def print_patient_figures(header: str, figures: dict[str, Any], columns: Sequence[str], signed: bool) -> None:
    """Print ``header``, a table of ``figures["patients"]`` (one row per patient: strings as they are, numbers to
    3 decimals) with a last row of ``figures["mean"]``, and one line per entry of ``figures["targets"]``
    (``value``, ``limit``, ``ok``; values with their sign where ``signed``)."""
    rows = [[r[c] if isinstance(r[c], str) else f"{r[c]:.3f}" for c in columns] for r in figures["patients"]]
    rows.append(["mean", *(f"{figures['mean'][c]:.3f}" for c in columns[1:])])
    print(header)
    print(format_table(columns, rows))
    for name, t in figures["targets"].items():
        value = f"{t['value']:+.3f}" if signed else f"{t['value']:.3f}"
        print(f"target {name}: {value} (limit {t['limit']}) {'ok' if t['ok'] else 'MISSED'}")
