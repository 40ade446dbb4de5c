"""Step cost of the Stage-2 methods: training and inference time, peak memory, and ratios between methods.

Models are built by `plaque.models.build.build_model` with ``pretrained=False``: the architecture of
the profile without reading SAM or Stage-1 weights (weights do not change speed). Inputs are random
slices (B, 1, s, s) in [0, 1], s = ``preprocess.size``, with random labels 0..4.

- Training step: forward (autocast as in training, `plaque.precision.device_autocast`), loss,
  backward, AdamW step. Inference: eval mode, ``torch.no_grad()``, the same autocast.
- Time: the models of all methods live in this process and take their steps in turn (A, B, C, A,
  B, C, ...), so a change in the machine's load hits every method alike; the first ``warmup``
  rounds are dropped and the median of the next ``steps`` rounds is kept. On CUDA every step is
  bracketed by ``torch.cuda.synchronize``.
- Memory: each method in a fresh process (`benchmarks.common.run_isolated`) that builds it and
  takes `MEMORY_STEPS` training steps and one inference step; on CUDA the peak of
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, on the CPU the peak
  resident memory of that process.
- FLOPs: each method's training and inference step counted once, before timing (`benchmarks.flops`), twice:
  the reference (SAM's architecture's work), from which the achieved TFLOP/s and, where the device's dense
  peak is known (or given), the MFU; and what the kernels executed.
- Levers (`Levers`): the attention kernel (`plaque.models.attention.KERNELS`) of every SAM attention, AdamW's
  fused implementation, and ``torch.compile`` of the model (mode ``reduce-overhead`` adds CUDA graphs). FLOPs are
  counted on the eager model before it is compiled; time and memory are taken with every lever applied.
- Ratios (`ratio_pairs`): `ours` over `no_prior` (the cost of the prior and FAA) and every method
  over `sam_lora`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import current_bytes, memory_kind, peak_bytes, reset_peak, run_isolated
from benchmarks.flops import executed_flops, mfu, peak_tflops, reference_flops
from plaque.classes import NUM_CLASSES
from plaque.methods import stage2_methods
from plaque.models.attention import set_attention_kernel
from plaque.models.build import build_model
from plaque.precision import device_autocast, resolve_precision
from plaque.train.distributed import DistInfo
from plaque.train.stage2 import Stage2Step, stage2_loss, stage2_optimizer

BASELINE = "sam_lora"
WARMUP = 3  # untimed rounds before the timed ones (default)
STEPS = 10  # timed rounds (default)
TARGET_OVERHEAD = 0.15  # ours / no_prior - 1 on 2 CPU cores, demo profile: what the prior and FAA may add
# The second step runs with AdamW's moment buffers in place: the steady-state peak.
MEMORY_STEPS = 2


@dataclass(frozen=True)
class Levers:
    """How the step runs, beyond the model and batch size.

    Attributes:
        kernel: SAM attention kernel (`plaque.models.attention.KERNELS`).
        adamw: AdamW's implementation, ``fused`` (``fused=True``, what Stage-2 training uses) or PyTorch's
            ``default``.
        compile: ``torch.compile`` mode of the model (``"default"``, ``"reduce-overhead"``: CUDA graphs too,
            ``"max-autotune"``), or ``None`` for eager.
    """

    kernel: str = "folded"
    adamw: str = "fused"
    compile: str | None = None

    def labels(self) -> tuple[str, str, str]:
        """How tables show the levers: the attention kernel, ``fused`` or ``default`` AdamW, the compile mode or
        ``eager``."""
        return self.kernel, self.adamw, self.compile or "eager"


@dataclass(frozen=True)
class Memory:
    """Peak memory of one measurement process.

    Attributes:
        kind: ``"cuda_max_memory_allocated"`` or ``"peak_rss"`` (`benchmarks.common.memory_kind`).
        peak_bytes: the peak while the model was built and stepped.
        base_bytes: what the process held before (the imports' resident memory; 0 on a fresh GPU).
    """

    kind: str
    peak_bytes: int
    base_bytes: int


@dataclass(frozen=True)
class MethodFigures:
    """Timing and memory of one method at one batch size."""

    method: str
    batch_size: int
    train_step_s: float
    train_images_per_s: float
    infer_step_s: float
    infer_slices_per_s: float
    memory: Memory | None
    train_flops: int  # reference: SAM's architecture's work (`benchmarks.flops`)
    infer_flops: int
    train_flops_executed: int | None  # what the kernels multiplied (None: not countable, `executed_flops`)
    infer_flops_executed: int | None
    train_tflops_per_s: float
    infer_tflops_per_s: float
    train_mfu: float | None
    infer_mfu: float | None


@dataclass(frozen=True)
class StepReport:
    """`MethodFigures` per method and the `ratios` between them, with the settings they were taken with."""

    device: str
    batch_size: int
    slice_size: int
    warmup: int
    steps: int
    methods: dict[str, MethodFigures]
    ratios: dict[str, dict[str, float]]
    levers: Levers


@dataclass
class Run:
    """A method's model, optimizer and training step; ``forward`` is what the timed steps call: the model
    itself, or its ``torch.compile`` (`compile_run`)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Stage2Step
    forward: torch.nn.Module


def check_methods(methods: Iterable[str]) -> list[str]:
    """``methods`` as a list, each one our Stage-2 trainer trains (`plaque.methods.stage2_methods`; ``SystemExit``
    otherwise)."""
    methods = list(methods)
    known = stage2_methods()
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise SystemExit(f"error: --methods: {unknown or 'none given'}; choose from {sorted(known)}")
    return methods


def random_batch(size: int, batch_size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Slices (B, 1, size, size) uniform in [0, 1] and labels (B, size, size) uniform in 0..4."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 1, size, size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (batch_size, size, size), generator=generator)
    return x, labels


def build_run(cfg: dict[str, Any], method: str, device: torch.device, levers: Levers = Levers()) -> Run:
    """``method``'s model on ``device`` in training mode with the attention kernel of ``levers``, AdamW over its
    trainable parameters (fused where ``levers`` says), its step; eager (`compile_run` compiles it)."""
    torch.manual_seed(cfg["train"]["seed"])
    model, _ = build_model(cfg, method, None, pretrained=False)
    set_attention_kernel(model, levers.kernel).to(device).train()
    optimizer = stage2_optimizer(model, cfg, fused=True if levers.adamw == "fused" else None)
    return Run(model, optimizer, Stage2Step(stage2_loss(cfg["stage2"])), model)


def compile_run(run: Run, mode: str | None) -> Run:
    """``run`` with its ``forward`` the ``torch.compile`` of its model in ``mode`` (unchanged for ``None``)."""
    if mode is None:
        return run
    return Run(run.model, run.optimizer, run.step, torch.compile(run.model, mode=mode))


def train_step(run: Run, batch: tuple[Tensor, Tensor], info: DistInfo) -> None:
    """One training step: forward and loss (under the device's automatic precision, as training), backward, AdamW."""
    with device_autocast(info.device):
        total, _ = run.step(run.forward, batch, info)
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    run.optimizer.step()


def infer_step(model: torch.nn.Module, x: Tensor, device: torch.device) -> None:
    """One inference forward pass (the model must be in eval mode)."""
    with torch.no_grad(), device_autocast(device):
        model(x)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds ``fn()`` takes, the GPU's queue drained before and after on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(
    fns: Mapping[str, Callable[[], None]], device: torch.device, warmup: int, steps: int
) -> dict[str, float]:
    """Median seconds of each of ``fns``, called in turn for ``warmup + steps`` rounds, warm-up rounds dropped."""
    if warmup < 0 or steps < 1:
        raise ValueError(f"need warmup >= 0 and steps >= 1, got {warmup} and {steps}")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():
            seconds = timed(fn, device)
            if i >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def method_memory(
    cfg: dict[str, Any], method: str, device: torch.device, batch_size: int, levers: Levers = Levers()
) -> Memory:
    """Peak memory of building ``method`` and taking `MEMORY_STEPS` training steps and one inference step, with
    ``levers``.

    Meant for a fresh process (`benchmarks.common.run_isolated`): the reading covers the whole process.
    """
    base = current_bytes(device)
    reset_peak(device)
    run = compile_run(build_run(cfg, method, device, levers), levers.compile)
    x, labels = (t.to(device) for t in random_batch(cfg["preprocess"]["size"], batch_size))
    info = DistInfo(device=device)
    for _ in range(MEMORY_STEPS):
        train_step(run, (x, labels), info)
    run.forward.eval()
    infer_step(run.forward, x, device)
    return Memory(memory_kind(device), peak_bytes(device), base)


def ratio_pairs(methods: Iterable[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) pairs to report among ``methods``: ours/no_prior, then each/`BASELINE`."""
    methods = list(methods)
    pairs = [("ours", "no_prior")] if {"ours", "no_prior"} <= set(methods) else []
    if BASELINE in methods:
        pairs += [(m, BASELINE) for m in methods if m != BASELINE]
    return pairs


def ratios(figures: Mapping[str, MethodFigures]) -> dict[str, dict[str, float]]:
    """``{"a/b": {"train_step": ..., "infer_step": ..., "peak_memory": ...}}`` for each of `ratio_pairs`."""
    out = {}
    for a, b in ratio_pairs(figures):
        fa, fb = figures[a], figures[b]
        entry = {"train_step": fa.train_step_s / fb.train_step_s, "infer_step": fa.infer_step_s / fb.infer_step_s}
        if fa.memory is not None and fb.memory is not None:
            entry["peak_memory"] = fa.memory.peak_bytes / fb.memory.peak_bytes
        out[f"{a}/{b}"] = entry
    return out


def benchmark_steps(
    cfg: dict[str, Any],
    methods: Iterable[str],
    device: torch.device,
    batch_size: int,
    *,
    warmup: int,
    steps: int,
    memory: bool = True,
    peak: float | None = None,
    levers: Levers = Levers(),
) -> StepReport:
    """Time ``methods`` in turn with ``levers`` (see the module docstring), count each step's model FLOPs
    (`benchmarks.flops`), and with ``memory`` measure each one's peak. ``peak`` (TFLOP/s) overrides the device's
    known peak for MFU."""
    methods = check_methods(methods)
    memories = {m: run_isolated(method_memory, cfg, m, device, batch_size, levers) if memory else None for m in methods}
    size = cfg["preprocess"]["size"]
    x, labels = (t.to(device) for t in random_batch(size, batch_size))
    info = DistInfo(device=device)
    runs = {m: build_run(cfg, m, device, levers) for m in methods}
    train_executed = {m: executed_flops(lambda r=r: train_step(r, (x, labels), info)) for m, r in runs.items()}
    train_flops = {m: reference_flops(r.model, lambda r=r: train_step(r, (x, labels), info)) for m, r in runs.items()}
    for run in runs.values():
        run.model.eval()
    infer_executed = {m: executed_flops(lambda r=r: infer_step(r.model, x, device)) for m, r in runs.items()}
    infer_flops = {m: reference_flops(r.model, lambda r=r: infer_step(r.model, x, device)) for m, r in runs.items()}
    runs = {m: compile_run(r, levers.compile) for m, r in runs.items()}
    for run in runs.values():
        run.forward.train()
    train = interleaved_medians(
        {m: (lambda r=r: train_step(r, (x, labels), info)) for m, r in runs.items()}, device, warmup, steps
    )
    for run in runs.values():
        run.forward.eval()
    infer = interleaved_medians(
        {m: (lambda r=r: infer_step(r.forward, x, device)) for m, r in runs.items()}, device, warmup, steps
    )
    del runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    top = peak_tflops(device, resolve_precision("auto", device), peak)
    figures = {
        m: MethodFigures(
            m,
            batch_size,
            train[m],
            batch_size / train[m],
            infer[m],
            batch_size / infer[m],
            memories[m],
            train_flops[m],
            infer_flops[m],
            train_executed[m],
            infer_executed[m],
            train_flops[m] / train[m] / 1e12,
            infer_flops[m] / infer[m] / 1e12,
            mfu(train_flops[m], train[m], top),
            mfu(infer_flops[m], infer[m], top),
        )
        for m in methods
    }
    return StepReport(str(device), batch_size, size, warmup, steps, figures, ratios(figures), levers)
