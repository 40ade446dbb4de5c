"""train.precision: what auto resolves to, which autocast runs, when a gradient scaler is on."""

from __future__ import annotations

import pytest
import torch

import plaque.precision as precision_module
from plaque.errors import InputError
from plaque.precision import autocast, grad_scaler, resolve_precision

CPU = torch.device("cpu")


def test_auto_on_the_cpu_follows_its_native_bf16_and_explicit_choices_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    assert [resolve_precision(p, CPU) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]
    with pytest.raises(InputError, match="train.precision"):
        resolve_precision("fp8", CPU)


def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a V100
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    assert resolve_precision("auto", cuda) == "fp16"
    with pytest.raises(InputError, match="V100-SXM2-32GB has no bf16"):
        resolve_precision("bf16", cuda)


def test_autocast_and_scaler_follow_the_precision() -> None:
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        with autocast(CPU, precision):
            assert layer(x).dtype == dtype
    assert grad_scaler(CPU, "fp16").is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled() and not grad_scaler(CPU, "fp32").is_enabled()
