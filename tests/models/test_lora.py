"""LoRA on the q and v parts of SAM's fused qkv projections, and which parameters each tuning mode trains."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from plaque.errors import InputError
from plaque.models.lora import LoRAQKV, apply_lora, configure_tuning
from plaque.models.sam import build_image_encoder


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_image_encoder("vit_tiny", input_size=64, patch_size=4).eval()


def test_output_identical_at_init() -> None:
    encoder = tiny()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = encoder(x)
        base_weights = [b.attn.qkv.weight.clone() for b in encoder.blocks]
        params = apply_lora(encoder, 4)
        after = encoder(x)
    assert torch.equal(before, after)
    assert len(params) == 4 * len(encoder.blocks)
    for block, weight in zip(encoder.blocks, base_weights):
        assert isinstance(block.attn.qkv, LoRAQKV) and torch.equal(block.attn.qkv.weight, weight)
        assert block.attn.qkv.lora_q_a.shape == (4, 192) and block.attn.qkv.lora_q_b.shape == (192, 4)
        assert block.attn.qkv.lora_q_a.abs().sum() > 0 and block.attn.qkv.lora_q_b.abs().sum() == 0


def test_only_q_and_v_change() -> None:
    base = nn.Linear(8, 24)
    lora = LoRAQKV(base, rank=2)
    x = torch.randn(5, 8)
    with torch.no_grad():
        lora.lora_q_b.normal_()
        lora.lora_v_b.normal_()
        ref, out = base(x).chunk(3, -1), lora(x).chunk(3, -1)
    assert torch.equal(out[1], ref[1])
    assert not torch.allclose(out[0], ref[0]) and not torch.allclose(out[2], ref[2])
    torch.testing.assert_close(out[0], ref[0] + x @ lora.lora_q_a.t() @ lora.lora_q_b.t())
    torch.testing.assert_close(out[2], ref[2] + x @ lora.lora_v_a.t() @ lora.lora_v_b.t())


def test_state_dict_keeps_official_keys_and_round_trips() -> None:
    encoder = tiny()
    official = set(encoder.state_dict())
    apply_lora(encoder, 3)
    keys = set(encoder.state_dict())
    assert official <= keys
    assert keys - official == {f"blocks.{n}.attn.qkv.lora_{p}_{m}" for n in range(4) for p in "qv" for m in "ab"}
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_()
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    buffer.seek(0)
    restored = tiny()
    apply_lora(restored, 3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(restored(x), encoder(x))


def test_trainable_parameters_per_mode() -> None:
    full = tiny()
    assert configure_tuning(full, "full", 4) == list(full.parameters())
    assert all(p.requires_grad for p in full.parameters())
    frozen = tiny()
    assert configure_tuning(frozen, "frozen", 4) == []
    assert not any(p.requires_grad for p in frozen.parameters())
    lora = tiny()
    params = configure_tuning(lora, "lora", 4)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in lora.parameters() if p.requires_grad}
    assert len(trainable) == 16 and all(".attn.qkv.lora_" in n for n in trainable)


def test_backward_reaches_only_lora_parameters() -> None:
    encoder = tiny()
    params = configure_tuning(encoder, "lora", 4)
    with torch.no_grad():
        for p in params[1::2]:  # B matrices, so that A gets a gradient too
            p.normal_(std=0.01)
    encoder(torch.rand(2, 3, 64, 64)).square().mean().backward()
    lora_ids = {id(p) for p in params}
    for name, p in encoder.named_parameters():
        if id(p) in lora_ids:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_bad_rank_mode_and_double_application() -> None:
    with pytest.raises(InputError, match="stage2.lora_rank"):
        apply_lora(tiny(), 0)
    with pytest.raises(InputError, match="stage2.sam_tuning"):
        configure_tuning(tiny(), "partial", 4)
    encoder = tiny()
    apply_lora(encoder, 2)
    with pytest.raises(ValueError, match="already"):
        apply_lora(encoder, 2)
