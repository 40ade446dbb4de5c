"""Model FLOPs of a step and the model FLOPs utilisation (MFU) they imply on a device.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one real step (matrix products,
convolutions and attention, forward and backward; 2 FLOPs per multiply-add), not estimated. Two counts:

- **reference**: the work SAM's architecture needs. Within `sam_reference_attention` every SAM attention
  computes as ``segment_anything`` writes it (logits, the decomposed relative-position term from its two
  small tables, softmax, values), so the count is comparable with any other implementation of SAM;
- **executed**: what the step's kernels actually multiply. The folded attention kernel
  (`plaque.models.attention`) adds ``h + w`` channels to every query-key product, which in a 1024² ViT-B
  global block triples it.

The MFU is the reference count over the measured seconds, over the device's dense peak for the precision
the step ran in: `PEAKS` holds the vendors' dense (no sparsity) peaks of common GPUs; ``--peak-tflops`` overrides
it, and must be given for a CPU or a GPU not listed.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from segment_anything.modeling.image_encoder import add_decomposed_rel_pos
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from plaque.models.attention import SdpaAttention

# Dense peak TFLOP/s by GPU name fragment: (bf16/fp16 tensor cores, fp32). Vendor data sheets, no sparsity;
# SXM parts where a card comes in several forms. A name matches the first fragment it contains.
PEAKS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
    "A10": (125.0, 31.2),
    "V100": (125.0, 15.7),  # fp16 tensor cores; V100 has no bf16
    "RTX 4090": (165.2, 82.6),
    "RTX 3090": (71.0, 35.6),
    "T4": (65.0, 8.1),
}


# PyTorch's formula table counts the CUDA attention kernels but not the CPU one, so a count on the CPU
# would leave out every attention product (a quarter of ViT-B's forward FLOPs at 1024²). The CPU
# kernel and its backward take the same leading arguments as the CUDA ones.
def _attention(query: list[int], key: list[int], value: list[int], *args: object, **kwargs: object) -> int:
    """FLOPs of the CPU attention kernel from the shapes of its ``(B, H, N, d)`` query, key and value."""
    return sdpa_flop_count(query, key, value)


def _attention_backward(
    grad: list[int], query: list[int], key: list[int], value: list[int], *args: object, **kwargs: object
) -> int:
    """FLOPs of the CPU attention kernel's backward from the shapes of its output gradient, query, key, value."""
    return sdpa_backward_flop_count(grad, query, key, value)


CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}


class _Total:
    """Stands in for the counter's per-module tracker: every FLOP goes to the total. The tracker hooks every
    module, and its backward hooks fail inside a module that runs part of its forward under ``no_grad``
    (our frozen prior); only the total is needed here."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _Total:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """Model FLOPs of one call of ``fn`` (forward and, where ``fn`` runs it, backward)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    counter.mod_tracker = _Total()
    with counter:
        fn()
    return int(counter.get_total_flops())


def _sam_attention_forward(self: SdpaAttention, x: Tensor, prompt: Tensor | None = None) -> Tensor:
    """SAM's attention written out (``segment_anything``'s ``Attention.forward``), with CAT-SAM's optional prompt
    token prepended without positional term: tokens (B, h, w, C) → (B, h, w, C)."""
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    if prompt is not None:
        tokens = torch.cat([prompt.to(tokens.dtype).expand(b, 1, c), tokens], dim=1)
    total, prefix = tokens.shape[1], tokens.shape[1] - h * w
    qkv = self.qkv(tokens).reshape(b, total, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * self.num_heads, total, -1).unbind(0)
    logits = (q * self.scale) @ k.transpose(-2, -1)
    if self.use_rel_pos:
        grid = add_decomposed_rel_pos(
            logits[:, prefix:, prefix:], q[:, prefix:], self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
        )
        logits = torch.cat([logits[:, :prefix], torch.cat([logits[:, prefix:, :prefix], grid], dim=2)], dim=1)
    out = (logits.softmax(dim=-1) @ v)[:, prefix:]
    return self.proj(out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1))


@contextmanager
def sam_reference_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within it, every `SdpaAttention` of ``model`` computes SAM's attention as ``segment_anything`` writes it,
    on the same parameters (the reference count of the module docstring); restored on exit."""
    modules = [m for m in model.modules() if isinstance(m, SdpaAttention)]
    for m in modules:
        m.forward = types.MethodType(_sam_attention_forward, m)
    try:
        yield model
    finally:
        for m in modules:
            del m.forward


def reference_flops(model: nn.Module, fn: Callable[[], object]) -> int:
    """`count_flops` of ``fn`` with ``model``'s SAM attention computed as SAM writes it (`sam_reference_attention`)."""
    with sam_reference_attention(model):
        return count_flops(fn)


def executed_flops(fn: Callable[[], object]) -> int | None:
    """`count_flops` of what the kernels execute; ``None`` where the counter cannot trace a kernel (flex
    attention outside a compiled GPU kernel)."""
    try:
        return count_flops(fn)
    except TypeError as e:
        if "flex_attention" not in str(e):
            raise
        return None


def peak_tflops(device: torch.device, precision: str, override: float | None = None) -> float | None:
    """The dense peak (TFLOP/s) of ``device`` at ``precision`` (``bf16``/``fp16``: tensor cores; ``fp32``), from
    `PEAKS` by the GPU's name; ``override`` wins; ``None`` when unknown (a CPU, an unlisted GPU)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (tensor, fp32) in PEAKS.items():
        if fragment in name:
            return fp32 if precision == "fp32" else tensor
    return None


def mfu(flops: int, seconds: float, peak: float | None) -> float | None:
    """Achieved FLOP/s over ``peak`` TFLOP/s; ``None`` without a peak."""
    return None if peak is None or seconds <= 0 else flops / seconds / (peak * 1e12)
