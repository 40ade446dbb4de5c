"""CAT-SAM baseline: shapes (demo and ViT-B), SAM's attention reproduced, the prompt token in every block and
window, a frozen SAM through training, official weights through `build_model`, checkpoints through `load_trained`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import window_partition

from plaque.checkpoint import model_record, save_atomic
from plaque.classes import NUM_CLASSES
from plaque.config import load_config
from plaque.losses.segmentation import SegLoss
from plaque.models.build import build_model, load_trained
from plaque.models.cat_sam import CatSamSegmenter, build_cat_sam, prompt_block
from plaque.models.decoders import output_upscaling
from plaque.models.sam import build_image_encoder
from tests.models.test_attention import plain_sam_encoder, reference_attention
from tests.models.test_sam import sam_layout, save_named

pytestmark = pytest.mark.filterwarnings("ignore:stage2.backbone is vit_tiny")
SAM_PREFIXES = ("image_encoder.", "output_upscaling.")
TRAINABLE_PARTS = {
    "hq_token",
    "hq_token_proj",
    "embedding_maskfeature",
    "embedding_encoder",
    "compress_vit_feat",
    "hf_mlp",
    "classifier",
}


@pytest.fixture(scope="module")
def demo() -> dict:
    """The demo profile, with a random encoder (whatever the working tree's models/ holds)."""
    cfg = load_config(profile="demo")
    cfg["stage2"]["weights"] = "random"
    return cfg


def tiny(input_size: int = 64) -> CatSamSegmenter:
    """CAT-SAM on ``vit_tiny`` (patch 4) with random, non-zero positional tables (SAM initialises rel-pos to 0)."""
    torch.manual_seed(0)
    encoder = build_image_encoder("vit_tiny", input_size=input_size, patch_size=4)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "pos" in name:
                p.normal_(0.0, 0.5)
    return CatSamSegmenter(image_encoder=encoder, input_size=input_size).eval()


def plain_copy(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """``encoder``'s weights (``vit_tiny``) in `segment_anything`'s own encoder, with its own attention."""
    patch = encoder.patch_embed.proj.kernel_size[0]
    plain = plain_sam_encoder("vit_tiny", input_size=encoder.pos_embed.shape[1] * patch, patch_size=patch)
    plain.load_state_dict(encoder.state_dict())
    return plain


def sam_blocks(encoder: ImageEncoderViT, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output of ``encoder``."""
    x = encoder.patch_embed(images) + encoder.pos_embed
    out = []
    for block in encoder.blocks:
        x = block(x)
        out.append(x)
    return out


def test_demo_profile_shapes_and_gradients(demo: dict) -> None:
    torch.manual_seed(0)
    model, weights = build_model(demo, "cat_sam", None, pretrained=False)
    assert isinstance(model, CatSamSegmenter) and weights == "random"
    size, g = demo["preprocess"]["size"], demo["stage2"]["input_size"] // demo["stage2"]["patch_size"]
    dim = demo["stage2"]["embed_dim"]
    x = torch.rand(2, 1, size, size)
    features = model.encode(model.preprocess(x))
    assert features.embedding.shape == (2, dim, g, g) and features.early.shape == (2, 192, g, g)
    blocks = list(model.block_outputs(model.preprocess(x)))
    assert model.early_block == 1 and len(blocks) == 4  # vit_tiny: global attention in blocks 1 and 3
    torch.testing.assert_close(features.early, blocks[1].permute(0, 3, 1, 2))
    assert model.hq_features(features.embedding, features.early).shape == (2, dim // 8, 4 * g, 4 * g)
    logits = model.train()(x)
    assert logits.shape == (2, NUM_CLASSES, size, size) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())
    assert all(p.grad is None for p in model.image_encoder.parameters())


def test_vit_b_shapes_at_1024() -> None:
    with torch.device("meta"):  # shapes only: the 1024² forward takes ~17 s on 2 CPU cores
        model = build_cat_sam(
            {"input_size": 1024, "embed_dim": 256}, build_image_encoder("vit_b", input_size=1024, patch_size=16)
        )
        x = torch.rand(1, 1, 64, 64)
        features = model.encode(model.preprocess(x))
        blocks = list(model.block_outputs(model.preprocess(x)))
        hq = model.hq_features(features.embedding, features.early)
        logits = model(x)
    assert model.early_block == 2  # ViT-B's first global block
    assert features.embedding.shape == (1, 256, 64, 64) and features.early.shape == (1, 768, 64, 64)
    assert all(b.shape == (1, 64, 64, 768) for b in blocks) and len(blocks) == 12
    assert [t.shape for t in model.prompt_tokens()] == [(768,)] * 12
    assert hq.shape == (1, 32, 256, 256) and logits.shape == (1, NUM_CLASSES, 64, 64)
    encoder_ids = {id(p) for p in model.image_encoder.parameters()}
    assert not encoder_ids & {id(p) for p in model.trainable_parameters()}


@pytest.mark.parametrize("input_size", [64, 56])  # g = 16: 2×2 windows of 8; g = 14: windows zero-padded to 16
def test_without_prompts_the_attention_is_sams(input_size: int) -> None:
    model = tiny(input_size)
    images = torch.randn(2, 3, input_size, input_size)
    with torch.no_grad():
        ours = model.encode(images, [None] * 4)
        ours_blocks = list(model.block_outputs(images, [None] * 4))
        plain = plain_copy(model.image_encoder)
        reference = sam_blocks(plain, images)
        embedding = plain(images)
    assert len(ours_blocks) == len(reference) == 4
    for n, (a, b) in enumerate(zip(ours_blocks, reference)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"block {n}")
    torch.testing.assert_close(ours.embedding, embedding, rtol=0, atol=1e-5)


@pytest.mark.parametrize("input_size", [64, 56])
def test_prompt_attention_is_cat_sams(input_size: int) -> None:
    """Windowed and global blocks, with zero-padded windows at 56: the prompt joins every window, no rel-pos for it."""
    model = tiny(input_size)
    g = input_size // 4
    x = torch.randn(2, g, g, 192)
    with torch.no_grad():
        for n, (block, prompt) in enumerate(zip(model.image_encoder.blocks, model.prompt_tokens())):
            torch.testing.assert_close(
                prompt_block(block, x, prompt),
                prompt_block(block, x, prompt, reference_attention),
                rtol=0,
                atol=1e-5,
                msg=f"block {n}",
            )


def test_the_token_changes_every_block_and_every_window() -> None:
    model = tiny()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = list(model.block_outputs(images, [None] * 4))
        first, first_embedding = list(model.block_outputs(images)), model.encode(images).embedding
        model.hq_token.weight.add_(1.0)
        second, second_embedding = list(model.block_outputs(images)), model.encode(images).embedding
    for blocks in (first, second):
        assert all(not torch.allclose(a, b) for a, b in zip(blocks, plain))
    assert all(not torch.allclose(a, b) for a, b in zip(first, second))
    assert not torch.allclose(first_embedding, second_embedding)
    # Block 0 attends in 2×2 windows of 8×8: the prompt reaches each window on its own.
    windows, _ = window_partition((first[0] - plain[0]).abs(), 8)
    assert windows.shape[0] == 4 and (windows.amax(dim=(1, 2, 3)) > 1e-4).all()


def test_one_step_trains_only_the_bridge_hq_parts_and_head(demo: dict) -> None:
    torch.manual_seed(0)
    model, _ = build_model(demo, "cat_sam", None, pretrained=False)
    params = list(model.trainable_parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable} == TRAINABLE_PARTS
    assert len(params) == len(trainable) and not any(n.startswith(SAM_PREFIXES) for n in trainable)
    sam = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(SAM_PREFIXES)}
    assert sam and all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(SAM_PREFIXES))
    before = [p.detach().clone() for p in params]
    size = demo["preprocess"]["size"]
    x, y = torch.rand(2, 1, size, size), torch.randint(0, NUM_CLASSES, (2, size, size))
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    loss, _ = SegLoss()(model.train()(x), y)
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, params)), "every trainable tensor moves"
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in sam.items()), "SAM stays bit-identical"


def test_build_model_loads_official_sam_weights(demo: dict, tmp_path: Path) -> None:
    """An official-layout ViT-B checkpoint (built at the configured 64², patch 4, so nothing is resized)."""
    cfg = {**demo, "stage2": {**demo["stage2"], "backbone": "vit_b", "embed_dim": 256}}  # official: SAM's neck width
    state = sam_layout(build_image_encoder("vit_b", input_size=64, patch_size=4))
    upscaling = output_upscaling(256, nn.GELU)
    state.update({f"mask_decoder.output_upscaling.{k}": torch.randn_like(v) for k, v in upscaling.state_dict().items()})
    cfg["stage2"]["weights"] = str(save_named(state, tmp_path))
    model, weights = build_model(cfg, "cat_sam", None)
    assert weights == "user-checkpoint"
    own = model.state_dict()
    for key, value in state.items():
        if key.startswith(("image_encoder.", "mask_decoder.output_upscaling.")):
            assert torch.equal(own[key.removeprefix("mask_decoder.")], value), key
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(SAM_PREFIXES))
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, 32, 32)).shape == (1, NUM_CLASSES, 32, 32)


def test_random_encoder_warns_that_it_stays_frozen(demo: dict, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="plaque.models.build"):
        model, weights = build_model(demo, "cat_sam", None)
    assert weights == "random" and "frozen on a RANDOMLY INITIALISED encoder" in caplog.text
    assert "nothing in it trains" in caplog.text
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_load_trained_restores_a_checkpoint(demo: dict, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model, _ = build_model(demo, "cat_sam", None, pretrained=False)
    path = tmp_path / "best.pt"
    save_atomic({**model_record("cat_sam", demo, {}), "format": 1, "epoch": 1, "model": model.state_dict()}, path)
    loaded = load_trained(path)
    assert isinstance(loaded, CatSamSegmenter) and not loaded.training
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
