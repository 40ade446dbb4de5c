"""SAM's attention on fused SDPA: the same function and gradients as `segment_anything`'s, no (N, N)
tensor kept for backward, a prompt token as CAT-SAM's reference computes it, and every encoder built with it."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn as nn
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention, add_decomposed_rel_pos

from plaque.models.attention import SdpaAttention, grid_codes, set_attention_kernel, use_sdpa_attention
from plaque.models.sam import build_image_encoder, encoder_spec


def sam_attention(dim: int, heads: int, size: tuple[int, int], seed: int = 0) -> Attention:
    """`segment_anything`'s attention with random, non-zero relative-position tables (SAM starts them at 0)."""
    torch.manual_seed(seed)
    attn = Attention(dim, heads, qkv_bias=True, use_rel_pos=True, input_size=size)
    with torch.no_grad():
        attn.rel_pos_h.normal_(0.0, 0.5)
        attn.rel_pos_w.normal_(0.0, 0.5)
    return attn


def plain_sam_encoder(backbone: str, *, input_size: int, patch_size: int) -> ImageEncoderViT:
    """``backbone`` as `segment_anything` builds it, with its own attention (the reference)."""
    spec = encoder_spec(backbone)
    return ImageEncoderViT(
        img_size=input_size,
        patch_size=patch_size,
        embed_dim=spec["width"],
        depth=spec["depth"],
        num_heads=spec["heads"],
        mlp_ratio=4.0,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=spec["window"],
        global_attn_indexes=spec["global_blocks"],
    )


def reference_attention(attn: Attention, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """CAT-SAM-T's attention written out: softmax over [prompt; tokens], SAM's rel-pos on the token part only."""
    b, h, w, c = x.shape
    tokens = torch.cat([prompt.expand(b, 1, c), x.reshape(b, h * w, c)], dim=1)
    qkv = attn.qkv(tokens).reshape(b, h * w + 1, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * attn.num_heads, h * w + 1, -1).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    image = add_decomposed_rel_pos(
        logits[:, 1:, 1:].contiguous(), q[:, 1:].contiguous(), attn.rel_pos_h, attn.rel_pos_w, (h, w), (h, w)
    )
    logits = torch.cat([logits[:, :1], torch.cat([logits[:, 1:, :1], image], dim=2)], dim=1)
    out = (logits.softmax(dim=-1) @ v)[:, 1:]
    return attn.proj(out.view(b, attn.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1))


# (width, heads, grid, batch): vit_tiny's global grid and windows, ViT-B's window, a ViT-H-like head
# width of 80, a non-square grid.
CASES = [(192, 3, (16, 16), 2), (192, 3, (8, 8), 5), (768, 12, (14, 14), 2), (160, 2, (7, 7), 3), (128, 2, (6, 10), 2)]


@pytest.mark.parametrize("width,heads,size,batch", CASES)
def test_same_function_and_gradients_as_sams_attention(
    width: int, heads: int, size: tuple[int, int], batch: int
) -> None:
    reference = sam_attention(width, heads, size)
    ours = SdpaAttention(copy.deepcopy(reference))
    x = torch.randn(batch, *size, width)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref, out_ours = reference(x_ref), ours(x_ours)
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=1e-5)
    upstream = torch.randn_like(out_ref)
    out_ref.backward(upstream)
    out_ours.backward(upstream)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    names = dict(ours.named_parameters())
    assert set(names) == {n for n, _ in reference.named_parameters()}  # same parameters, same state-dict keys
    for name, p in reference.named_parameters():
        torch.testing.assert_close(names[name].grad, p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_a_prompt_token_is_attended_without_positional_term() -> None:
    reference = sam_attention(192, 3, (8, 8))
    ours = SdpaAttention(copy.deepcopy(reference))
    x, prompt = torch.randn(4, 8, 8, 192), torch.randn(192)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, prompt), reference_attention(reference, x, prompt), rtol=0, atol=1e-5)
        assert not torch.allclose(ours(x, prompt), ours(x), atol=1e-3)


def test_no_square_tensor_is_kept_for_backward() -> None:
    """A global block on 32 × 32 tokens: SAM's own keeps (B·heads, N, N) logits, ours nothing of N² size."""
    n = 32 * 32
    reference = sam_attention(192, 3, (32, 32))
    x = torch.randn(2, 32, 32, 192, requires_grad=True)

    def largest_saved(module: nn.Module) -> int:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            module(x)
        return max(sizes)

    assert largest_saved(reference) >= 2 * 3 * n * n
    assert largest_saved(SdpaAttention(reference)) <= 2 * 3 * n * 128  # (B, heads, N, hd + 32 + 32)


def test_grid_codes_are_row_and_column_one_hots() -> None:
    codes = grid_codes((2, 3), device=torch.device("cpu"), dtype=torch.float32)
    assert codes.shape == (6, 5)
    assert codes[4].tolist() == [0, 1, 0, 1, 0]  # cell 4 = row 1, column 1
    assert (codes.sum(dim=1) == 2).all()


def test_bf16_autocast_stays_close_to_fp32() -> None:
    ours = SdpaAttention(sam_attention(192, 3, (16, 16)))
    x = torch.randn(2, 16, 16, 192)
    with torch.no_grad():
        exact = ours(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = ours(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - exact).norm() / exact.norm() < 2e-2


@pytest.mark.parametrize("input_size", [64, 56])  # g = 16: 2×2 windows of 8; g = 14: windows zero-padded to 16
def test_built_encoders_use_it_and_compute_plain_sam(input_size: int) -> None:
    torch.manual_seed(0)
    encoder = build_image_encoder("vit_tiny", input_size=input_size, patch_size=4)
    assert all(isinstance(block.attn, SdpaAttention) for block in encoder.blocks)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "pos" in name:
                p.normal_(0.0, 0.5)
    plain = plain_sam_encoder("vit_tiny", input_size=input_size, patch_size=4)
    plain.load_state_dict(encoder.state_dict())  # strict: the keys are SAM's
    images = torch.randn(2, 3, input_size, input_size)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), plain(images), rtol=0, atol=1e-5)
    attentions = [block.attn for block in encoder.blocks]
    assert [block.attn for block in use_sdpa_attention(encoder).blocks] == attentions  # idempotent


@pytest.mark.parametrize("width,heads,size,batch", CASES)
def test_the_flex_kernel_is_sams_attention_in_float64(
    width: int, heads: int, size: tuple[int, int], batch: int
) -> None:
    """Flex attention with SAM's bias in its ``score_mod`` (PyTorch's reference on the CPU): SAM's output to
    float64 precision."""
    reference = sam_attention(width, heads, size).double()
    flex = SdpaAttention(copy.deepcopy(reference), kernel="flex")
    x = torch.randn(batch, *size, width, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(flex(x), reference(x), rtol=0, atol=1e-10)


def test_the_flex_kernel_does_not_train_on_the_cpu() -> None:
    flex = SdpaAttention(sam_attention(192, 3, (8, 8)), kernel="flex")
    with pytest.raises(RuntimeError, match="GPU only"):
        flex(torch.randn(1, 8, 8, 192))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled flex kernel needs a GPU")
def test_the_compiled_flex_kernel_matches_sams_attention_within_bf16_on_a_gpu() -> None:
    reference = sam_attention(768, 12, (64, 64)).cuda()
    flex = SdpaAttention(copy.deepcopy(reference), kernel="flex")
    x = torch.randn(2, 64, 64, 768, device="cuda")
    x_ref, x_flex = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref = reference(x_ref)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out_flex = flex(x_flex)
    assert (out_flex.float() - out_ref).norm() / out_ref.norm() < 2e-2
    upstream = torch.randn_like(out_ref)
    out_ref.backward(upstream)
    out_flex.float().backward(upstream)
    assert (x_flex.grad - x_ref.grad).norm() / x_ref.grad.norm() < 3e-2
    names = dict(flex.named_parameters())
    for name, p in reference.named_parameters():
        assert (names[name].grad - p.grad).norm() / p.grad.norm() < 3e-2, name


def test_the_flex_kernel_attends_a_prompt_token_without_positional_term() -> None:
    reference = sam_attention(192, 3, (8, 8)).double()
    x, prompt = torch.randn(2, 8, 8, 192, dtype=torch.float64), torch.randn(192, dtype=torch.float64)
    flex = SdpaAttention(copy.deepcopy(reference), kernel="flex")
    with torch.no_grad():
        torch.testing.assert_close(flex(x, prompt), reference_attention(reference, x, prompt), rtol=0, atol=1e-10)


def test_the_kernel_is_chosen_per_model_and_checked() -> None:
    torch.manual_seed(0)
    encoder = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        folded = encoder(images)
        flexed = set_attention_kernel(encoder, "flex")(images)
    assert {block.attn.kernel for block in encoder.blocks} == {"flex"}
    torch.testing.assert_close(flexed, folded, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="attention kernel"):
        set_attention_kernel(encoder, "triton")
