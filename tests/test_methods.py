"""Every Stage-2 method: its architecture choices, a forward pass and one training step on tiny inputs."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from plaque.checkpoint import save_atomic
from plaque.classes import NUM_CLASSES
from plaque.config import load_config
from plaque.errors import InputError
from plaque.losses.segmentation import SegLoss
from plaque.methods import METHODS, get_method, method_stage2
from plaque.models.build import build_model
from plaque.models.cat_sam import CatSamSegmenter
from plaque.models.decoders import ClassTokenDecoder, MultiClassHead
from plaque.models.lora import LoRAQKV
from plaque.models.sam import load_sam_mask_decoder
from plaque.models.segmenter import PriorSegmenter

pytestmark = pytest.mark.filterwarnings("ignore:stage2.backbone is vit_tiny")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(profile="smoke")


@pytest.mark.parametrize("name", sorted(m for m, spec in METHODS.items() if not spec.external))
def test_forward_and_one_training_step(cfg: dict, name: str) -> None:
    torch.manual_seed(0)
    model, weights = build_model(cfg, name, None, pretrained=False)
    assert weights == "random"
    method = get_method(name)
    if name == "cat_sam":
        assert isinstance(model, CatSamSegmenter) and method.prior is None
    else:
        assert isinstance(model, PriorSegmenter)
        assert model.fusion == method.fusion and (model.prior is None) == (method.prior is None)
        decoder = method.decoder or cfg["stage2"]["decoder"]
        assert isinstance(model.decoder, ClassTokenDecoder if decoder == "class_tokens" else MultiClassHead)
    size = cfg["preprocess"]["size"]
    x, y = torch.rand(2, 1, size, size), torch.randint(0, NUM_CLASSES, (2, size, size))
    model.train()
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES, size, size)
    params = list(model.trainable_parameters())
    before = [p.detach().clone() for p in params]
    trainable = {id(p) for p in params}
    fixed = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in trainable}
    if method.sam_tuning in ("frozen", "lora"):
        assert any(n.startswith("image_encoder.") for n in fixed), "SAM's own weights do not train"
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("prior.")}
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    loss, _ = SegLoss()(logits, y)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params)), "a step changes the trainable weights"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items()), "the prior stays frozen"
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in fixed.items()), "what does not train stays as it was"


def test_sam_lora_trains_only_lora_and_the_decoder(cfg: dict) -> None:
    model, _ = build_model(cfg, "sam_lora", None, pretrained=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    encoder = {n for n in trainable if n.startswith("image_encoder.")}
    assert encoder and all(".lora_" in n for n in encoder), "in the encoder, LoRA alone trains"
    assert any(n.startswith("decoder.") for n in trainable)
    assert any(isinstance(m, LoRAQKV) for m in model.image_encoder.modules())
    assert model.adapter is None and model.faa is None


def test_method_stage2_overrides_only_what_the_method_fixes(cfg: dict) -> None:
    s2 = cfg["stage2"]
    assert method_stage2(s2, "ours") == s2
    lora = method_stage2(s2, "sam_lora")
    assert lora["sam_tuning"] == "lora" and lora["decoder"] == "class_tokens"
    assert {k: v for k, v in lora.items() if k not in ("sam_tuning", "decoder")} == {
        k: v for k, v in s2.items() if k not in ("sam_tuning", "decoder")
    }
    cat_sam = method_stage2(s2, "cat_sam")
    assert cat_sam["sam_tuning"] == "frozen" and cat_sam["decoder"] == "hq"
    with pytest.raises(InputError, match="not one of"):
        get_method("unet")


def test_class_token_decoder_takes_sams_pretrained_mask_decoder(tmp_path) -> None:
    torch.manual_seed(0)
    sam_decoder = MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=3,
    )
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(16, 16), input_image_size=(64, 64), mask_in_chans=16)
    state = {
        **{f"mask_decoder.{k}": v for k, v in sam_decoder.state_dict().items()},
        **{f"prompt_encoder.{k}": v for k, v in prompt.state_dict().items()},
    }
    path = tmp_path / "sam.pth"
    save_atomic(state, path)
    decoder = ClassTokenDecoder(num_classes=NUM_CLASSES)
    hyper_before = decoder.output_hypernetworks_mlps[0].layers[0].weight.clone()
    loaded = load_sam_mask_decoder(decoder, path)
    assert any(k.startswith("transformer.") for k in loaded) and any(k.startswith("output_upscaling.") for k in loaded)
    own = decoder.state_dict()
    for key in loaded:
        source = ("prompt_encoder." if key.startswith("pe_layer.") else "mask_decoder.") + key
        assert torch.equal(own[key], state[source]), key
    assert torch.equal(decoder.output_hypernetworks_mlps[0].layers[0].weight, hyper_before), "class MLPs start fresh"
