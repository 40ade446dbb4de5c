"""SAM's encoder attention: `segment_anything`'s own against `plaque.models.attention.SdpaAttention`.

    python -m benchmarks.sam_attention [--device cpu|cuda] [--batch 8] [--grid 64] [--steps 5]
                                       [--json results/bench/sam_attention.json]

Cases, each with random relative-position tables (SAM initialises them to zero):

- ``vit_b global``: ViT-B's global block (768 wide, 12 heads) on a ``grid`` × ``grid`` map (64 at
  1024² input), ``batch`` maps;
- ``vit_b window``: the same block on 14 × 14 windows, ``batch`` · ⌈grid / 14⌉² of them (a 1024²
  image is 25 zero-padded windows);
- ``vit_h global``: a ViT-H-wide global block (1280 wide, 16 heads; head width 80).

Per case and implementation: forward + backward under training autocast (bf16 on CUDA,
`plaque.precision.device_autocast`), median of ``steps`` passes after one warm-up pass
(`benchmarks.steps.interleaved_medians`); on CUDA the peak of ``max_memory_allocated`` during a first
pass over what was allocated before it (inputs and block, `benchmarks.common.peak_bytes`). ``error``: the relative L2 error of the output under autocast against SAM's attention in
float64. ``flash``: whether the fused path runs with only the flash kernel allowed.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from segment_anything.modeling.image_encoder import Attention
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.common import current_bytes, format_table, gib, peak_bytes, reset_peak, resolve_device
from benchmarks.steps import interleaved_medians
from plaque.atomic import write_json_atomic
from plaque.models.attention import SdpaAttention
from plaque.precision import device_autocast

WINDOW = 14  # SAM's window side
DEFAULT_JSON = Path("results/bench/sam_attention.json")


@dataclass(frozen=True)
class Case:
    """One attention block and its input: ``count`` maps of ``side`` × ``side`` tokens, ``width`` channels."""

    name: str
    width: int
    heads: int
    side: int
    count: int


@dataclass(frozen=True)
class Figures:
    """One implementation on one case."""

    case: str
    impl: str
    fwd_bwd_ms: float
    peak_bytes: int | None
    error: float
    flash: bool | None


def cases(batch: int, grid: int) -> list[Case]:
    """The three cases of the module docstring for ``batch`` images of ``grid`` × ``grid`` tokens."""
    windows = batch * math.ceil(grid / WINDOW) ** 2
    return [
        Case("vit_b global", 768, 12, grid, batch),
        Case("vit_b window", 768, 12, WINDOW, windows),
        Case("vit_h global", 1280, 16, grid, batch),
    ]


def sam_block(case: Case, device: torch.device) -> Attention:
    """`segment_anything`'s attention for ``case`` with random relative-position tables."""
    torch.manual_seed(0)
    attn = Attention(case.width, case.heads, qkv_bias=True, use_rel_pos=True, input_size=(case.side, case.side))
    with torch.no_grad():
        attn.rel_pos_h.normal_(0.0, 0.5)
        attn.rel_pos_w.normal_(0.0, 0.5)
    return attn.to(device)


def fwd_bwd(block: torch.nn.Module, x: torch.Tensor, device: torch.device) -> None:
    """One forward (training autocast) and backward of the output's mean square."""
    with device_autocast(device):
        out = block(x)
    out.float().square().mean().backward()


def flash_runs(block: SdpaAttention, x: torch.Tensor, device: torch.device) -> bool:
    """Whether ``block`` runs (forward, autocast) with the flash kernel as the only SDPA backend."""
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION), device_autocast(device):
            block(x)
    except RuntimeError:
        return False
    return True


def measure(case: Case, device: torch.device, steps: int) -> list[Figures]:
    """Both implementations on ``case``."""
    sam = sam_block(case, device)
    fused = SdpaAttention(copy.deepcopy(sam))
    x = torch.randn(case.count, case.side, case.side, case.width, device=device)
    with torch.no_grad():
        exact = copy.deepcopy(sam).double()(x.double())
    out = []
    for impl, block in (("sam", sam), ("sdpa", fused)):
        with torch.no_grad(), device_autocast(device):
            low = block(x)
        error = ((low.double() - exact).norm() / exact.norm()).item()
        inputs = x.clone().requires_grad_(True)

        def one_pass(block: torch.nn.Module = block, inputs: torch.Tensor = inputs) -> None:
            fwd_bwd(block, inputs, device)

        peak = None
        if device.type == "cuda":
            base = current_bytes(device)
            reset_peak(device)
            one_pass()
            peak = peak_bytes(device) - base
        seconds = interleaved_medians({impl: one_pass}, device, warmup=1, steps=steps)[impl]
        flash = flash_runs(block, x, device) if impl == "sdpa" else None
        out.append(Figures(case.name, impl, seconds * 1e3, peak, error, flash))
    return out


def lines(figures: list[Figures], device: torch.device, steps: int) -> list[str]:
    """The figures as a table."""
    rows = [
        (
            f.case,
            f.impl,
            f"{f.fwd_bwd_ms:.2f}",
            "n/a" if f.peak_bytes is None else f"{gib(f.peak_bytes):.2f}",
            f"{f.error:.2e}",
            {None: "-", True: "yes", False: "no"}[f.flash],
        )
        for f in figures
    ]
    return [
        f"SAM attention on {device}: forward + backward under training autocast, median of {steps} after one "
        "warm-up; error: relative L2 against SAM's attention in float64; flash: runs on the flash kernel alone",
        format_table(("case", "impl", "fwd+bwd ms", "peak GiB", "error", "flash"), rows),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sam_attention", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--batch", type=int, default=8, help="images (default 8)")
    parser.add_argument("--grid", type=int, default=64, help="global grid side (default 64: 1024² input)")
    parser.add_argument("--steps", type=int, default=5, help="timed passes (default 5)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    figures = [f for case in cases(args.batch, args.grid) for f in measure(case, device, args.steps)]
    print("\n".join(lines(figures, device, args.steps)))
    write_json_atomic(
        args.json,
        {
            "device": str(device),
            "batch": args.batch,
            "grid": args.grid,
            "steps": args.steps,
            "figures": [asdict(f) for f in figures],
        },
    )
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
