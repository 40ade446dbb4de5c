"""SAM image encoders: shapes, official architecture, verified weight loading with resizing, weights resolution."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from segment_anything import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from segment_anything.modeling import ImageEncoderViT

from plaque.config import load_config
from plaque.errors import InputError
from plaque.models.sam import (
    DOWNLOAD_URL,
    build_image_encoder,
    embedding_size,
    encoder_spec,
    load_sam_image_encoder,
    load_sam_state,
    resize_patch_kernel,
    resolve_weights,
    save_sam_image_encoder,
    weights_source,
)

# Image-encoder parameter counts of the official SAM models.
OFFICIAL_PARAMS = {"vit_b": 89_670_912, "vit_l": 308_278_272, "vit_h": 637_026_048}


class Payload:
    """A custom object: a checkpoint holding one needs pickle to load."""


def save_named(state: dict, folder: Path, backbone: str = "vit_b", digits: str | None = None) -> Path:
    """Save ``state`` as ``sam_<backbone>_<hex>.pth``, the hex being its own SHA-256 prefix unless given."""
    tmp = folder / "unnamed.pth"
    torch.save(state, tmp)
    digits = digits or hashlib.sha256(tmp.read_bytes()).hexdigest()[:6]
    return tmp.rename(folder / f"sam_{backbone}_{digits}.pth")


def sam_layout(encoder: ImageEncoderViT) -> dict[str, torch.Tensor]:
    """``encoder``'s weights with random positional tables, keyed as in an official SAM checkpoint."""
    torch.manual_seed(1)
    state = {
        f"image_encoder.{k}": torch.randn_like(v) if "pos" in k else v.clone() for k, v in encoder.state_dict().items()
    }
    state["prompt_encoder.no_mask_embed.weight"] = torch.randn(1, 256)
    state["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    return state


@pytest.fixture(scope="module")
def vit_b() -> ImageEncoderViT:
    torch.manual_seed(0)
    return build_image_encoder("vit_b", input_size=1024, patch_size=16).eval()


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full-size ViT-B checkpoint in the official layout, named with its SHA-256 prefix."""
    torch.manual_seed(2)
    state = sam_layout(build_image_encoder("vit_b", input_size=1024, patch_size=16))
    return save_named(state, tmp_path_factory.mktemp("sam")), state


def tiny_checkpoint(folder: Path, *, input_size: int = 64, patch_size: int = 4) -> tuple[Path, dict]:
    torch.manual_seed(3)
    state = sam_layout(build_image_encoder("vit_tiny", input_size=input_size, patch_size=patch_size))
    return save_named(state, folder, "vit_tiny"), state


@pytest.mark.parametrize(("size", "grid"), [(64, 16), (128, 32)])
def test_vit_tiny_shapes(size: int, grid: int) -> None:
    encoder = build_image_encoder("vit_tiny", input_size=size, patch_size=4)
    with torch.no_grad():
        assert encoder(torch.rand(2, 3, size, size)).shape == (2, 256, grid, grid)
    assert embedding_size(size, 4) == grid


def test_vit_b_forward_shape(vit_b: ImageEncoderViT) -> None:
    with torch.no_grad():
        assert vit_b(torch.rand(1, 3, 1024, 1024)).shape == (1, 256, 64, 64)


@pytest.mark.parametrize(
    ("backbone", "official"), [("vit_b", build_sam_vit_b), ("vit_l", build_sam_vit_l), ("vit_h", build_sam_vit_h)]
)
def test_official_architectures(backbone: str, official: object) -> None:
    with torch.device("meta"):
        ours = build_image_encoder(backbone, input_size=1024, patch_size=16)
        reference = official().image_encoder
    assert sum(p.numel() for p in ours.parameters()) == OFFICIAL_PARAMS[backbone]
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    spec = encoder_spec(backbone)
    assert [n for n, b in enumerate(ours.blocks) if b.window_size == 0] == list(spec["global_blocks"])
    assert ours.blocks[0].attn.num_heads == spec["heads"] and len(ours.blocks) == spec["depth"]


def test_bad_backbone_and_sizes() -> None:
    with pytest.raises(InputError, match="stage2.backbone"):
        build_image_encoder("vit_s", input_size=64, patch_size=4)
    with pytest.raises(InputError, match="multiple"):
        build_image_encoder("vit_tiny", input_size=66, patch_size=4)


def test_load_at_1024_is_exact(vit_b: ImageEncoderViT, vit_b_checkpoint: tuple[Path, dict]) -> None:
    path, state = vit_b_checkpoint
    load_sam_image_encoder(vit_b, path, input_size=1024, patch_size=16, map_location="cpu")
    loaded = vit_b.state_dict()
    assert set(loaded) == {k.removeprefix("image_encoder.") for k in state if k.startswith("image_encoder.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[f"image_encoder.{key}"]), key
    full = load_sam_state(path)
    assert set(full) == set(state) and {k.split(".")[0] for k in full} == {
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    }


def test_load_at_512_resizes_positions(vit_b_checkpoint: tuple[Path, dict]) -> None:
    path, state = vit_b_checkpoint
    torch.manual_seed(0)
    encoder = build_image_encoder("vit_b", input_size=512, patch_size=16).eval()
    load_sam_image_encoder(encoder, path, input_size=512, patch_size=16, map_location="cpu")
    source = state["image_encoder.pos_embed"]
    # Bilinear halving (align_corners=False) averages 2×2 cells.
    expected = F.avg_pool2d(source.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(encoder.pos_embed.data, expected)
    for n, block in enumerate(encoder.blocks):
        rel = state[f"image_encoder.blocks.{n}.attn.rel_pos_h"]
        if block.window_size == 0:
            assert block.attn.rel_pos_h.shape == (63, 64)
            want = F.interpolate(rel.t()[None], size=63, mode="linear", align_corners=False)[0].t()
            torch.testing.assert_close(block.attn.rel_pos_h.data, want)
        else:
            assert torch.equal(block.attn.rel_pos_h.data, rel)
    assert torch.equal(encoder.patch_embed.proj.weight.data, state["image_encoder.patch_embed.proj.weight"])
    with torch.no_grad():
        out = encoder(torch.rand(1, 3, 512, 512))
    assert out.shape == (1, 256, 32, 32) and torch.isfinite(out).all()


def test_patch_kernel_resize_matches_sam_on_upsampled_patches() -> None:
    """A 4×4-patch encoder loaded from a 16×16-patch one embeds each patch as the original embeds it upsampled."""
    torch.manual_seed(0)
    source = build_image_encoder("vit_tiny", input_size=256, patch_size=16)
    weight = source.patch_embed.proj.weight.data
    x = torch.rand(2, 3, 64, 64)
    patches = x.reshape(2, 3, 16, 4, 16, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, 4, 4)
    up = F.interpolate(patches, size=(16, 16), mode="bilinear", align_corners=False)
    up = up.reshape(2, 16, 16, 3, 16, 16).permute(0, 3, 1, 4, 2, 5).reshape(2, 3, 256, 256)
    expected = F.conv2d(up, weight, stride=16)
    got = F.conv2d(x, resize_patch_kernel(weight, 4), stride=4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_load_tiny_with_another_patch_size(tmp_path: Path) -> None:
    path, state = tiny_checkpoint(tmp_path, input_size=256, patch_size=16)
    encoder = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    load_sam_image_encoder(encoder, path, input_size=64, patch_size=4)
    kernel = state["image_encoder.patch_embed.proj.weight"]
    torch.testing.assert_close(encoder.patch_embed.proj.weight.data, resize_patch_kernel(kernel, 4))
    assert torch.equal(encoder.pos_embed.data, state["image_encoder.pos_embed"])  # same 16×16 grid
    with pytest.raises(ValueError, match="not built for input 128"):
        load_sam_image_encoder(encoder, path, input_size=128, patch_size=4)


def test_wrong_hash_prefix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="does not start with 01ec64") as info:
        load_sam_state(path)
    assert info.value.where == str(path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sam_vit_b_custom.pth"
    torch.save({"image_encoder.pos_embed": Payload()}, path)
    with pytest.raises(InputError, match="needs pickle"):
        load_sam_state(path)


def test_non_tensor_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(InputError, match="value of 'epoch' is int, not a tensor"):
        load_sam_state(path)


def test_missing_unexpected_and_misshapen_keys(tmp_path: Path) -> None:
    path, state = tiny_checkpoint(tmp_path)
    encoder = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    del state["image_encoder.neck.0.weight"]
    state["image_encoder.extra.weight"] = torch.zeros(1)
    broken = save_named(state, tmp_path, "vit_tiny")
    with pytest.raises(
        InputError,
        match=r"missing \['image_encoder.neck.0.weight'\], "
        r"unexpected \['image_encoder.extra.weight'\]",
    ):
        load_sam_image_encoder(encoder, broken, input_size=64, patch_size=4)
    with pytest.raises(InputError, match="no 'image_encoder"):
        load_sam_image_encoder(
            encoder, save_named({"mask_decoder.x": torch.zeros(1)}, tmp_path), input_size=64, patch_size=4
        )
    wide = sam_layout(build_image_encoder("vit_tiny", input_size=64, patch_size=4))
    wide["image_encoder.blocks.0.mlp.lin1.weight"] = torch.zeros(192, 768)
    with pytest.raises(InputError, match=r"lin1.weight has shape \(192, 768\) but the encoder needs \(768, 192\)"):
        load_sam_image_encoder(encoder, save_named(wide, tmp_path, "vit_tiny"), input_size=64, patch_size=4)
    load_sam_image_encoder(encoder, path, input_size=64, patch_size=4)


def test_missing_weights_in_paper_profile_say_where_to_get_them(tmp_path: Path) -> None:
    cfg = load_config(profile="paper")["stage2"]
    with pytest.raises(InputError) as info:
        resolve_weights(cfg, root=tmp_path)
    expected = tmp_path / "models" / "pretrained" / "sam_vit_b_01ec64.pth"
    assert info.value.where == str(expected)
    assert f"{DOWNLOAD_URL}sam_vit_b_01ec64.pth" in str(info.value) and str(expected) in str(info.value)
    expected.parent.mkdir(parents=True)
    expected.touch()
    assert resolve_weights(cfg, root=tmp_path) == expected
    with pytest.raises(InputError, match="is a vit_b checkpoint but stage2.backbone is vit_l"):
        resolve_weights({**cfg, "backbone": "vit_l"}, root=tmp_path)


def test_a_random_encoder_is_asked_for_by_name_and_a_missing_checkpoint_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paper = load_config(profile="paper")["stage2"]
    with pytest.raises(InputError, match="download .*sam_vit_b_01ec64.pth") as info:
        resolve_weights(paper, root=tmp_path)
    assert info.value.where == str(tmp_path / "models" / "pretrained" / "sam_vit_b_01ec64.pth")
    tiny = {**load_config(profile="demo")["stage2"], "weights": "models/foundation"}
    with pytest.raises(InputError, match="pretrain it with the foundation stage") as info:
        resolve_weights(tiny, root=tmp_path)
    assert info.value.where == str(tmp_path / "models" / "foundation")
    # "random" is never a path: even a file of that name is not read
    (tmp_path / "random").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        assert resolve_weights({**paper, "weights": "random"}, root=tmp_path) is None
    assert "RANDOMLY INITIALISED" in caplog.text and "vit_b" in caplog.text


def test_a_foundation_checkpoint_loads_like_an_official_one(tmp_path: Path) -> None:
    """What the foundation stage writes (SAM's key layout, the digest in the name, a note beside it) is found in
    its folder, checked against its digest and loaded strictly by the loader official weights go through."""
    torch.manual_seed(1)
    trained = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    folder = tmp_path / "models" / "foundation"
    path = save_sam_image_encoder(trained, folder, "vit_tiny", {"source": "phantom-simmim"})
    assert re.fullmatch(r"sam_vit_tiny_[0-9a-f]{8}\.pth", path.name)
    assert sorted(f.name for f in folder.iterdir()) == sorted([path.name, path.with_suffix(".json").name])
    cfg = {**load_config(profile="demo")["stage2"], "weights": "models/foundation"}
    assert resolve_weights(cfg, root=tmp_path) == path and weights_source(path) == "phantom-simmim"
    fresh = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    load_sam_image_encoder(fresh, path, input_size=64, patch_size=4)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    # the digest is checked: a file whose bytes changed under its name is refused
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not start with"):
        load_sam_image_encoder(fresh, path, input_size=64, patch_size=4)
    # the key check is strict: an encoder of another size does not take it
    save_sam_image_encoder(trained, folder, "vit_tiny", {"source": "phantom-simmim"})
    (other,) = folder.glob("*.pth")
    with pytest.raises(InputError, match="does not fit the 12-block encoder"):
        load_sam_image_encoder(
            build_image_encoder("vit_b", input_size=64, patch_size=4), other, input_size=64, patch_size=4
        )
    # two checkpoints in the folder are ambiguous
    shutil.copy(other, folder / "sam_vit_tiny_00000000.pth")
    with pytest.raises(InputError, match="holds 2 vit_tiny checkpoints"):
        resolve_weights(cfg, root=tmp_path)
