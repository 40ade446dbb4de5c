"""How one FAA block's time and memory grow with the token count, against an explicit attention.

    python -m benchmarks.faa_scaling [--device cpu|cuda] [--batch 1] [--max-grid 64] [--warmup 3] [--steps 10]

The block is the model's `plaque.models.faa.FAA` (256 channels, 4 heads, training mode) on g × g
grids (`grids_up_to`: 16, 32, 48, 64 → 256 … 4096 tokens), queries and keys/values both g², as in
the segmenter. ``explicit`` is the same block with softmax(QKᵀ/√d)V written out, which materialises
the (B, heads, N, N) matrix; ``sdpa`` is the model's fused path. Per point, in a fresh process
(`benchmarks.common.run_isolated`):

- peak: extra memory of one forward + backward over what the block and its inputs hold — on CUDA
  ``max_memory_allocated`` after ``reset_peak_memory_stats``, on the CPU the rise of the process's
  peak resident memory. It is the first pass at that size (before an allocator keeps freed memory
  around), after one pass on a `PRIMING_GRID` map that takes the one-time set-up;
- saved: bytes of the tensors autograd keeps for the backward pass (distinct storages, parameters
  and inputs left out), exact in any process;
- time: median forward + backward seconds after warm-up.

Autocast as in training (`plaque.precision.device_autocast`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.common import (
    current_bytes,
    format_table,
    gib,
    memory_kind,
    peak_bytes,
    reset_peak,
    resolve_device,
    run_isolated,
)
from benchmarks.steps import STEPS, WARMUP, interleaved_medians
from plaque.models.faa import FAA
from plaque.models.sam import OUT_CHANNELS as EMBED_DIM
from plaque.precision import device_autocast

HEADS = 4
GRID_STEP = 16
# One pass on this tiny grid before measuring, so one-time set-up (thread pools, cuBLAS workspace) is not counted.
PRIMING_GRID = 2


class ExplicitFAA(FAA):
    """`FAA` with the attention written out: softmax(QKᵀ/√d)V through the full (B, heads, N, M) matrix."""

    def attend(self, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """MHCA of ``queries`` (B, N, C) over ``keys`` and ``values`` (B, M, C) → (B, N, C), as `FAA.attend`."""
        q = self._heads(self.q_proj(queries))
        k = self._heads(self.k_proj(keys))
        v = self._heads(self.v_proj(values))
        weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
        out = weights @ v
        b, _, n, _ = out.shape
        return self.proj_drop(self.out_proj(out.transpose(1, 2).reshape(b, n, self.dim)))


IMPLEMENTATIONS: dict[str, type[FAA]] = {"sdpa": FAA, "explicit": ExplicitFAA}


@dataclass(frozen=True)
class Point:
    """One block at one grid: time, peak extra memory and bytes saved for backward."""

    impl: str
    grid: int
    tokens: int
    batch: int
    fwd_bwd_s: float
    peak_bytes: int
    saved_bytes: int


@dataclass(frozen=True)
class FaaReport:
    """All points, and per implementation the growth from the smallest to the largest grid."""

    device: str
    memory_kind: str
    batch: int
    warmup: int
    steps: int
    points: list[Point]
    growth: dict[str, dict[str, float | None]]


def grids_up_to(max_grid: int) -> list[int]:
    """Grid sides in steps of `GRID_STEP` up to ``max_grid`` (16, 32, 48, 64 for 64); ``[max_grid]`` below 16."""
    if max_grid < 1:
        raise ValueError(f"max_grid must be positive, got {max_grid}")
    step = min(GRID_STEP, max_grid)
    return list(range(step, max_grid + 1, step))


def _tokens(grid: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """SAM and prior token sequences (B, g², 256) that require gradients, as in the segmenter."""
    f_sam, f_vq = (torch.randn(batch, grid * grid, EMBED_DIM, device=device, requires_grad=True) for _ in range(2))
    return f_sam, f_vq


def _forward_backward(block: FAA, f_sam: Tensor, f_vq: Tensor, device: torch.device) -> None:
    """Forward under training autocast, backward of the output's sum, gradients dropped."""
    with device_autocast(device):
        out = block(f_sam, f_vq)
    out.float().sum().backward()
    block.zero_grad(set_to_none=True)
    f_sam.grad = f_vq.grad = None


def saved_for_backward(block: FAA, f_sam: Tensor, f_vq: Tensor, device: torch.device) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of one forward, beyond the
    parameters and inputs (which are held anyway)."""
    held = {t.untyped_storage().data_ptr() for t in (*block.parameters(), f_sam, f_vq)}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in held:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), device_autocast(device):
        block(f_sam, f_vq)
    return sum(storages.values())


def measure_point(impl: str, grid: int, batch: int, device: torch.device, warmup: int, steps: int) -> Point:
    """Peak extra memory, saved bytes and median time of ``impl`` on a ``grid`` × ``grid`` token map."""
    torch.manual_seed(0)
    block = IMPLEMENTATIONS[impl](EMBED_DIM, heads=HEADS).to(device).train()
    _forward_backward(block, *_tokens(PRIMING_GRID, batch, device), device)
    f_sam, f_vq = _tokens(grid, batch, device)
    held = current_bytes(device)
    reset_peak(device)
    _forward_backward(block, f_sam, f_vq, device)
    peak = max(0, peak_bytes(device) - held)
    saved = saved_for_backward(block, f_sam, f_vq, device)
    seconds = interleaved_medians({impl: lambda: _forward_backward(block, f_sam, f_vq, device)}, device, warmup, steps)[
        impl
    ]
    return Point(impl, grid, grid * grid, batch, seconds, peak, saved)


def _ratio(last: float, first: float) -> float | None:
    """``last / first``; ``None`` when ``first`` is not positive."""
    return last / first if first > 0 else None


def growth(points: list[Point]) -> dict[str, dict[str, float | None]]:
    """Per implementation: tokens, time, peak and saved bytes at the largest grid over the smallest."""
    out = {}
    for impl in dict.fromkeys(p.impl for p in points):
        mine = sorted((p for p in points if p.impl == impl), key=lambda p: p.grid)
        first, last = mine[0], mine[-1]
        out[impl] = {
            "tokens": _ratio(last.tokens, first.tokens),
            "time": _ratio(last.fwd_bwd_s, first.fwd_bwd_s),
            "peak_memory": _ratio(last.peak_bytes, first.peak_bytes),
            "saved_for_backward": _ratio(last.saved_bytes, first.saved_bytes),
        }
    return out


def faa_scaling(
    grids: Iterable[int], device: torch.device, *, batch: int = 1, warmup: int, steps: int, isolate: bool = True
) -> FaaReport:
    """`measure_point` for every implementation and grid, each in a fresh process unless not ``isolate``."""
    points = [
        run_isolated(measure_point, impl, g, batch, device, warmup, steps)
        if isolate
        else measure_point(impl, g, batch, device, warmup, steps)
        for g in grids
        for impl in IMPLEMENTATIONS
    ]
    return FaaReport(str(device), memory_kind(device), batch, warmup, steps, points, growth(points))


def _times(value: float | None) -> str:
    """A growth factor as ``×1.0``, or ``n/a``."""
    return "n/a" if value is None else f"×{value:.1f}"


def faa_lines(report: FaaReport) -> list[str]:
    """The report as a table and one growth line per implementation."""
    rows = [
        (
            p.impl,
            p.grid,
            p.tokens,
            f"{p.fwd_bwd_s * 1e3:.2f}",
            f"{gib(p.peak_bytes) * 1024:.1f}",
            f"{gib(p.saved_bytes) * 1024:.1f}",
        )
        for p in report.points
    ]
    lines = [
        f"FAA block (256 channels, {HEADS} heads), batch {report.batch}, forward + backward, median of "
        f"{report.steps} after {report.warmup} warm-up; peak = {report.memory_kind} over what block and "
        f"inputs hold",
        format_table(("impl", "grid", "tokens", "fwd+bwd ms", "peak MiB", "saved MiB"), rows),
    ]
    for impl, g in report.growth.items():
        lines.append(
            f"{impl}: {_times(g['tokens'])} tokens → peak memory {_times(g['peak_memory'])}, saved for "
            f"backward {_times(g['saved_for_backward'])}, time {_times(g['time'])}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure and print the scaling table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faa_scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--batch", type=int, default=1, help="token maps per pass (default 1)")
    parser.add_argument("--max-grid", type=int, default=64, help="largest grid side (default 64: 4096 tokens)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"untimed passes per point (default {WARMUP})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"timed passes per point (default {STEPS})")
    args = parser.parse_args(argv)
    report = faa_scaling(
        grids_up_to(args.max_grid), resolve_device(args.device), batch=args.batch, warmup=args.warmup, steps=args.steps
    )
    print("\n".join(faa_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
