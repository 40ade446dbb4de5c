"""PriorSegmenter: shapes, fusion modes, a prior that stays frozen through training, the builder."""

from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT

from plaque.config import load_config
from plaque.losses.segmentation import SegLoss
from plaque.models.decoders import ClassTokenDecoder, MultiClassHead
from plaque.models.sam import PIXEL_MEAN, PIXEL_STD
from plaque.models.segmenter import PriorSegmenter, build_segmenter
from plaque.models.vq import VQAutoencoder


def encoder(img_size: int = 64) -> ImageEncoderViT:
    """Small SAM-architecture encoder: (B, 3, S, S) → (B, 256, S/4, S/4)."""
    return ImageEncoderViT(
        img_size=img_size,
        patch_size=4,
        embed_dim=96,
        depth=2,
        num_heads=3,
        window_size=8,
        global_attn_indexes=(1,),
        out_chans=256,
    )


def vq() -> VQAutoencoder:
    """Small Stage-1 model, latents 8² for 64² slices."""
    return VQAutoencoder(codebook_size=16, latent_dim=8, downsample=8, channels=[8, 16], embed_dim=8)


def prior() -> VQAutoencoder:
    """``vq()`` with a codebook seeded from data and moved by two EMA steps."""
    vq_model = vq().train()
    for _ in range(2):
        vq_model(torch.rand(4, 1, 64, 64))
    assert bool(vq_model.quantizer.initialised)
    return vq_model


def segmenter(fusion: str = "faa", decoder: str = "head", input_size: int = 64, **kw: object) -> PriorSegmenter:
    torch.manual_seed(0)
    dec = MultiClassHead() if decoder == "head" else ClassTokenDecoder(depth=1, mlp_dim=64)
    return PriorSegmenter(
        image_encoder=encoder(input_size),
        decoder=dec,
        prior=prior() if fusion != "none" else None,
        input_size=input_size,
        fusion=fusion,
        **kw,
    )


@pytest.mark.parametrize("fusion", ["faa", "add", "none"])
def test_fusions_give_slice_resolution_logits(fusion: str) -> None:
    model = segmenter(fusion).train()
    x = torch.rand(2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 5, 64, 64) and torch.isfinite(logits).all()
    logits.mean().backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
    assert (model.faa is not None) == (fusion == "faa") and (model.adapter is not None) == (fusion != "none")


def test_other_input_size_and_class_token_decoder() -> None:
    model = segmenter("faa", decoder="class_tokens", input_size=96).eval()  # g = 24, latent 8² resized to 24²
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 5, 64, 64)


def test_preprocess_matches_sam_normalisation() -> None:
    model = segmenter("none", input_size=64)
    x = torch.rand(2, 1, 64, 64)
    sam_in = model.preprocess(x)
    assert sam_in.shape == (2, 3, 64, 64)
    for c in range(3):
        torch.testing.assert_close(sam_in[:, c], (x[:, 0] * 255 - PIXEL_MEAN[c]) / PIXEL_STD[c])
    assert model.preprocess(torch.rand(2, 1, 32, 32)).shape == (2, 3, 64, 64)


def test_prior_frozen_and_bit_identical_after_a_training_step() -> None:
    model = segmenter("faa")
    prior_state = copy.deepcopy(model.prior.state_dict())
    assert {"quantizer.codebook", "quantizer.ema_count", "quantizer.ema_sum", "quantizer.unused_steps"} <= set(
        prior_state
    )
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("prior.")}
    prior_ids = {id(p) for p in model.prior.parameters()}
    assert prior_ids.isdisjoint(id(p) for p in model.trainable_parameters())
    assert len(list(model.trainable_parameters())) == len(trainable)

    model.train()
    assert not model.prior.training and all(not m.training for m in model.prior.modules())
    assert model.image_encoder.training and model.faa.training
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    x, y = torch.rand(2, 1, 64, 64), torch.randint(0, 5, (2, 64, 64))
    loss, _ = SegLoss()(model(x), y)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.prior.parameters())
    optimizer.step()

    for key, value in model.prior.state_dict().items():
        assert torch.equal(value, prior_state[key]), key
    for name in (
        "adapter.weight",
        "faa.q_proj.weight",
        "decoder.classifier.class_embed.weight",
        "image_encoder.pos_embed",
    ):
        assert not torch.equal(dict(model.named_parameters())[name], trainable[name]), name


def test_rejects_inconsistent_prior_and_fusion() -> None:
    with pytest.raises(ValueError, match="needs"):
        PriorSegmenter(image_encoder=encoder(), decoder=MultiClassHead(), prior=None, input_size=64, fusion="faa")
    with pytest.raises(ValueError, match="takes no"):
        PriorSegmenter(image_encoder=encoder(), decoder=MultiClassHead(), prior=vq(), input_size=64, fusion="none")
    with pytest.raises(ValueError, match="fusion"):
        PriorSegmenter(image_encoder=encoder(), decoder=MultiClassHead(), prior=vq(), input_size=64, fusion="concat")
    with pytest.raises(ValueError, match="odd"):
        PriorSegmenter(image_encoder=encoder(), decoder=MultiClassHead(), prior=vq(), input_size=64, adapter_kernel=2)


def test_build_segmenter_follows_params() -> None:
    cfg = load_config(profile="smoke")["stage2"]
    with_prior = build_segmenter(cfg, encoder(cfg["input_size"]), prior())
    assert cfg["decoder"] == "class_tokens"  # the paper's decoder for ours
    assert with_prior.fusion == "faa" and isinstance(with_prior.decoder, ClassTokenDecoder)
    assert with_prior.faa.heads == cfg["faa"]["heads"] and with_prior.faa.dropout == cfg["faa"]["dropout"]
    assert with_prior.adapter.kernel_size == (cfg["prior"]["adapter_kernel"],) * 2
    assert with_prior.input_size == cfg["input_size"]
    assert build_segmenter(cfg, encoder(cfg["input_size"]), prior(), fusion="add").fusion == "add"
    no_prior = build_segmenter({**cfg, "decoder": "head"}, encoder(cfg["input_size"]), None)
    assert no_prior.fusion == "none" and isinstance(no_prior.decoder, MultiClassHead)
    with torch.no_grad():
        assert no_prior.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 5, 64, 64)
