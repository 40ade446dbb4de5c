"""SAM image encoders: builders for the official ViT variants and a small one, and official weight loading.

Shapes: images (B, 3, S, S) with ``S = input_size``; image embeddings
(B, 256, g, g) with ``g = S / patch_size`` (``embedding_size``). The official
SAM encoders run at S = 1024, patch 16 (g = 64). Pretrained encoders expect
what ``Sam.preprocess`` gives them: RGB in [0, 255] normalised by SAM's
``pixel_mean``/``pixel_std``; that normalisation is the caller's.

Backbones (``ENCODER_SPECS``): ``vit_b``, ``vit_l``, ``vit_h`` are SAM's
encoders; ``vit_tiny`` is the same class made small for CPU demos (192 wide,
depth 4, 3 heads of 64, window 8, global attention in blocks 1 and 3). All use
relative positions in attention and a 256-channel neck, so every variant plugs
into SAM's prompt encoder and mask decoder.

Official weights. ``sam_vit_b_01ec64.pth`` etc. (``OFFICIAL_FILES``); the hex
digits in such a name are the start of the file's SHA-256 and are verified
before the file is read. Files are read with ``weights_only=True``, so a file
holding pickled objects is refused, never run.

Another input size or patch size. A checkpoint trained at 1024², patch 16, is
fitted to an encoder at (S, p) so that the encoder behaves like SAM looking at
the image bilinearly resized to ``(16·S/p)²``:

* ``pos_embed`` (1, 64, 64, C) is resized bilinearly to (1, g, g, C);
* ``rel_pos_h/w`` of the global blocks, (127, head_dim), are resized linearly to
  (2g − 1, head_dim), as SAM itself would interpolate them on the fly (windowed
  blocks keep their (2·window − 1, head_dim) tables);
* ``patch_embed.proj.weight`` (C, 3, 16, 16) becomes the adjoint of bilinear
  patch upsampling: with ``U`` the bilinear map from a p×p patch to 16×16,
  the new kernel is ``Uᵀw``, so ``⟨x, Uᵀw⟩ = ⟨Ux, w⟩`` exactly: each p×p patch
  gets the token the official kernel gives on that patch upsampled on its own.
  Plain bilinear resizing of the kernel would instead scale every response by
  about (p/16)² and sample the kernel rather than integrate it.

All resizes use ``align_corners=False`` and run in float32.

Mask decoder. `load_sam_mask_decoder` fills the parts a class-token decoder shares with SAM's mask
decoder (two-way transformer, output upscaling, the prompt encoder's Fourier positional encoding);
the class tokens and their hypernetwork MLPs start fresh, as in SAMed's multi-class mask decoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import Tensor

from plaque.checkpoint import load_checkpoint
from plaque.config import RANDOM_WEIGHTS
from plaque.errors import InputError
from plaque.models.attention import use_sdpa_attention
from plaque.models.resize import resize_bilinear
from plaque.paths import repo_root

log = logging.getLogger(__name__)

OUT_CHANNELS = 256  # channels of SAM's image embedding (every SAM variant's neck)
PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's input normalisation, on a 0..255 scale, RGB
PIXEL_STD = (58.395, 57.12, 57.375)
IMAGE_ENCODER_PREFIX = "image_encoder."
MASK_DECODER_PREFIX = "mask_decoder."
PROMPT_ENCODER_PREFIX = "prompt_encoder."
DOWNLOAD_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OFFICIAL_FILES: dict[str, str] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
_HASHED_NAME = re.compile(r"^sam_(vit_[a-z]+)_([0-9a-f]{6,64})\.pth$")


@dataclass(frozen=True)
class EncoderSpec:
    """Width, depth, heads, windowed-attention size and the blocks with global attention."""

    width: int
    depth: int
    heads: int
    window: int
    global_blocks: tuple[int, ...]


ENCODER_SPECS: dict[str, EncoderSpec] = {
    "vit_b": EncoderSpec(width=768, depth=12, heads=12, window=14, global_blocks=(2, 5, 8, 11)),
    "vit_l": EncoderSpec(width=1024, depth=24, heads=16, window=14, global_blocks=(5, 11, 17, 23)),
    "vit_h": EncoderSpec(width=1280, depth=32, heads=16, window=14, global_blocks=(7, 15, 23, 31)),
    "vit_tiny": EncoderSpec(width=192, depth=4, heads=3, window=8, global_blocks=(1, 3)),
}


def sam_input(x: Tensor, input_size: int, pixel_mean: Tensor, pixel_std: Tensor) -> Tensor:
    """Slices (B, 1, s, s) in [0, 1] → SAM input (B, 3, S, S): resize to S = ``input_size``, ×255, 3 channels,
    normalised by SAM's ``pixel_mean``/``pixel_std`` (each (1, 3, 1, 1), 0..255 scale)."""
    x = resize_bilinear(x, (input_size, input_size)) * 255.0
    return (x.expand(-1, 3, -1, -1) - pixel_mean) / pixel_std


def _spec(backbone: str) -> EncoderSpec:
    if backbone not in ENCODER_SPECS:
        raise InputError("stage2.backbone", f"{backbone!r} is not one of {sorted(ENCODER_SPECS)}")
    return ENCODER_SPECS[backbone]


def encoder_spec(backbone: str) -> dict[str, Any]:
    """``{"width", "depth", "heads", "window", "global_blocks"}`` of ``backbone``."""
    return asdict(_spec(backbone))


def embedding_size(input_size: int, patch_size: int) -> int:
    """Side ``g`` of the (g, g) embedding grid; ``input_size`` must be a multiple of ``patch_size``."""
    if patch_size < 1 or input_size < patch_size or input_size % patch_size:
        raise InputError("stage2.input_size", f"{input_size} is not a positive multiple of patch size {patch_size}")
    return input_size // patch_size


def build_image_encoder(
    backbone: str, *, input_size: int, patch_size: int, embed_dim: int = OUT_CHANNELS
) -> ImageEncoderViT:
    """A randomly initialised SAM image encoder: (B, 3, S, S) → (B, ``embed_dim``, S/p, S/p).

    ``embed_dim`` is the width of its neck (``stage2.embed_dim``): SAM's 256, which official checkpoints
    need; a compute-scale key for the demo's small encoder.

    Its blocks' attention is `plaque.models.attention.SdpaAttention` (SAM's function on the fused
    SDPA kernels, same parameters and state-dict keys). Built on the current default device
    (``with torch.device("meta"):`` builds it without memory).
    """
    spec = _spec(backbone)
    embedding_size(input_size, patch_size)
    return use_sdpa_attention(
        ImageEncoderViT(
            img_size=input_size,
            patch_size=patch_size,
            embed_dim=spec.width,
            depth=spec.depth,
            num_heads=spec.heads,
            mlp_ratio=4.0,
            out_chans=embed_dim,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=spec.window,
            global_attn_indexes=spec.global_blocks,
        )
    )


def _warn_random(message: str) -> None:
    warnings.warn(message, stacklevel=3)
    log.warning(message)


WEIGHTS_NOTE = ".json"  # beside a checkpoint: {"source": ...}, what the weights are (the foundation stage writes one)
OFFICIAL_SOURCE = "sam-official"


def weights_source(path: Path) -> str:
    """What a SAM checkpoint is, for the results: the ``source`` of the note beside it (``<name>.json``, e.g.
    ``phantom-simmim``), ``sam-official`` for an official file name, else ``user-checkpoint``."""
    note = Path(path).with_suffix(WEIGHTS_NOTE)
    if note.is_file():
        try:
            return str(json.loads(note.read_text())["source"])
        except (ValueError, KeyError, TypeError):
            raise InputError(note, "expected JSON with a 'source' key") from None
    return OFFICIAL_SOURCE if Path(path).name in OFFICIAL_FILES.values() else "user-checkpoint"


def _find_checkpoint(path: Path, backbone: str) -> Path:
    """``path`` itself, or the one ``sam_<backbone>_<hex>.pth`` in the folder ``path`` (as the foundation stage
    writes it); ``path`` unchanged when the folder holds none."""
    if not path.is_dir():
        return path
    found = sorted(f for f in path.glob(f"sam_{backbone}_*.pth") if _HASHED_NAME.match(f.name))
    if len(found) > 1:
        raise InputError(
            path,
            f"holds {len(found)} {backbone} checkpoints ({', '.join(f.name for f in found)}); "
            "keep one or point stage2.weights at a file",
        )
    return found[0] if found else path


def resolve_weights(cfg_stage2: dict[str, Any], *, root: Path | None = None) -> Path | None:
    """The SAM checkpoint to load for ``cfg_stage2``, or ``None`` for a random encoder (with a loud warning).

    ``stage2.weights`` is a checkpoint file, a folder holding exactly one ``sam_<backbone>_<hex>.pth``
    (the foundation stage's output), or ``random`` (`RANDOM_WEIGHTS`): a randomly initialised encoder,
    which is what ``None`` means — the caller then records ``backbone_weights: random``. A relative path
    is taken from ``root`` (default: the repository root).

    Raises:
        InputError: the checkpoint is missing (the message says where to get it and where to put it),
            or its name is the checkpoint of another backbone.
    """
    backbone = cfg_stage2["backbone"]
    _spec(backbone)
    if cfg_stage2["weights"] == RANDOM_WEIGHTS:
        _warn_random(
            f"stage2.weights is {RANDOM_WEIGHTS!r}: the SAM {backbone} image encoder is RANDOMLY INITIALISED, "
            "so results are not those of a pretrained SAM"
        )
        return None
    path = Path(cfg_stage2["weights"])
    if not path.is_absolute():
        path = (root if root is not None else repo_root()) / path
    path = _find_checkpoint(path, backbone)
    named = _HASHED_NAME.match(path.name)
    if named is not None and named.group(1) != backbone:
        raise InputError(
            "stage2.weights", f"{path.name} is a {named.group(1)} checkpoint but stage2.backbone is {backbone}"
        )
    if path.is_file():
        return path
    if backbone in OFFICIAL_FILES:
        how = f"download {DOWNLOAD_URL + OFFICIAL_FILES[backbone]} to {path}"
    else:
        how = f"{backbone} has no official weights: pretrain it with the foundation stage (dvc repro foundation)"
    raise InputError(
        path,
        f"SAM {backbone} weights not found; {how} (or set stage2.weights to where they are, "
        f"or to {RANDOM_WEIGHTS!r} for a randomly initialised encoder)",
    )


def save_sam_image_encoder(encoder: ImageEncoderViT, folder: Path, backbone: str, note: dict[str, Any]) -> Path:
    """Write ``encoder``'s weights in SAM's checkpoint layout (``image_encoder.*`` keys) as
    ``folder/sam_<backbone>_<first 8 hex digits of its SHA-256>.pth``, with ``note`` (which must hold
    ``source``, see `weights_source`) as the ``.json`` beside it; any other such pair there is removed.

    The name carries the digest as the official files do, so `load_sam_state` verifies it. Both files are
    written under temporary names and renamed into place, the checkpoint last.
    """
    if "source" not in note:
        raise ValueError("the note must say what the weights are ('source')")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".sam_{backbone}.pth.tmp"
    state = {IMAGE_ENCODER_PREFIX + k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    try:
        torch.save(state, tmp)
        path = folder / f"sam_{backbone}_{_sha256(tmp)[:8]}.pth"
        for old in [*folder.glob(f"sam_{backbone}_*.pth"), *folder.glob(f"sam_{backbone}_*{WEIGHTS_NOTE}")]:
            old.unlink()
        note_tmp = folder / f".sam_{backbone}.json.tmp"
        note_tmp.write_text(json.dumps({**note, "checkpoint": path.name}, indent=2) + "\n")
        note_tmp.replace(path.with_suffix(WEIGHTS_NOTE))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sam_state(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Every tensor of a SAM checkpoint (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).

    A name of the form ``sam_vit_<x>_<hex>.pth`` is checked against the file's SHA-256 first.

    Raises:
        InputError: missing or unreadable file, a digest that does not start with the name's hex
            digits, objects that need pickle to load, or values that are not tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "SAM checkpoint not found")
    named = _HASHED_NAME.match(path.name)
    if named is not None:
        digest = _sha256(path)
        if not digest.startswith(named.group(2)):
            raise InputError(
                path,
                f"SHA-256 {digest[:16]}… does not start with {named.group(2)} as its name says "
                "(corrupted or wrong file); download it again",
            )
    else:
        log.warning("%s: no SHA-256 prefix in the file name (sam_vit_<x>_<hex>.pth); integrity not verified", path)
    state = load_checkpoint(path, map_location)
    wrong = next((k for k, v in state.items() if not isinstance(v, Tensor)), None)
    if wrong is not None:
        kind = type(state[wrong]).__name__
        raise InputError(path, f"value of {wrong!r} is {kind}, not a tensor; expected a SAM state_dict")
    return state


def resize_pos_embed(pos_embed: Tensor, grid: int) -> Tensor:
    """Absolute positions (1, G, G, C) → (1, grid, grid, C), bilinear."""
    x = pos_embed.float().permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos_embed.dtype)


def resize_rel_pos(rel_pos: Tensor, length: int) -> Tensor:
    """Relative-position table (L, head_dim) → (length, head_dim), linear along L."""
    x = F.interpolate(rel_pos.float().t()[None], size=length, mode="linear", align_corners=False)
    return x[0].t().to(rel_pos.dtype)


def resize_patch_kernel(weight: Tensor, patch_size: int) -> Tensor:
    """Patch-embedding kernel (C, in, P, P) → (C, in, p, p) as ``Uᵀw``, U = bilinear upsampling p×p → P×P.

    A p×p patch ``x`` then gets exactly the response the original kernel gives on ``U x``.
    """
    source = weight.shape[-1]
    basis = torch.eye(patch_size * patch_size, device=weight.device).reshape(-1, 1, patch_size, patch_size)
    upsampled = F.interpolate(basis, size=(source, source), mode="bilinear", align_corners=False)
    flat = weight.float().reshape(-1, source * source) @ upsampled.reshape(-1, source * source).t()
    return flat.reshape(*weight.shape[:2], patch_size, patch_size).to(weight.dtype)


def _fit(key: str, value: Tensor, target: Tensor, path: Path) -> Tensor:
    """``value`` from the checkpoint, resized to the encoder's ``target`` shape where that is defined."""
    have, want = tuple(value.shape), tuple(target.shape)
    if have == want:
        return value
    if key == "pos_embed" and len(have) == 4 and have[3] == want[3] and want[1] == want[2]:
        return resize_pos_embed(value, want[1])
    if key.endswith((".rel_pos_h", ".rel_pos_w")) and len(have) == 2 and have[1] == want[1]:
        return resize_rel_pos(value, want[0])
    if key == "patch_embed.proj.weight" and len(have) == 4 and have[:2] == want[:2] and want[2] == want[3]:
        return resize_patch_kernel(value, want[2])
    raise InputError(
        path,
        f"{IMAGE_ENCODER_PREFIX}{key} has shape {have} but the encoder needs {want} "
        "(a checkpoint of another backbone?)",
    )


def load_sam_image_encoder(
    encoder: ImageEncoderViT,
    path: Path,
    *,
    input_size: int,
    patch_size: int,
    map_location: str | torch.device = "cpu",
) -> None:
    """Load the ``image_encoder.*`` weights of a SAM checkpoint into ``encoder``, strictly.

    ``encoder`` must be built for ``input_size``/``patch_size`` (by `build_image_encoder`) and not yet
    carry LoRA. Positional tables and the patch kernel are resized as the module docstring explains.

    Raises:
        InputError: anything `load_sam_state` rejects, no ``image_encoder.*`` keys, missing or
            unexpected keys, or shapes that no resize explains.
        ValueError: ``encoder`` was built for another input or patch size.
    """
    grid = embedding_size(input_size, patch_size)
    if encoder.pos_embed is None or tuple(encoder.pos_embed.shape[1:3]) != (grid, grid):
        raise ValueError(f"encoder is not built for input {input_size}, patch {patch_size} (grid {grid})")
    path = Path(path)
    state = {
        k.removeprefix(IMAGE_ENCODER_PREFIX): v
        for k, v in load_sam_state(path, map_location=map_location).items()
        if k.startswith(IMAGE_ENCODER_PREFIX)
    }
    if not state:
        raise InputError(path, f"holds no '{IMAGE_ENCODER_PREFIX}*' keys; expected an official SAM checkpoint")
    own = encoder.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(
            path,
            f"does not fit the {len(encoder.blocks)}-block encoder: "
            f"missing {[IMAGE_ENCODER_PREFIX + k for k in missing[:5]]}"
            f"{' …' if len(missing) > 5 else ''}, "
            f"unexpected {[IMAGE_ENCODER_PREFIX + k for k in unexpected[:5]]}"
            f"{' …' if len(unexpected) > 5 else ''}",
        )
    encoder.load_state_dict({k: _fit(k, v, own[k], path) for k, v in state.items()})


def load_sam_mask_decoder(decoder: nn.Module, path: Path, *, map_location: str | torch.device = "cpu") -> list[str]:
    """Load the parts of SAM's mask decoder that a `ClassTokenDecoder` shares with it; returns the keys loaded.

    Loaded: the two-way ``transformer``, the ``output_upscaling`` and the prompt encoder's Fourier
    positional encoding (``pe_layer``). Not loaded, because their number or meaning differs: SAM's
    IoU token and head, its mask tokens and per-mask hypernetwork MLPs (C class tokens start fresh,
    as SAMed's multi-class mask decoder does). An encoder-only checkpoint (no ``mask_decoder.*`` key, as
    the foundation stage writes) loads nothing: the decoder keeps its fresh initialisation.

    Raises:
        InputError: anything `load_sam_state` rejects, or a shared key missing or of another shape.
    """
    state = load_sam_state(Path(path), map_location=map_location)
    if not any(k.startswith(MASK_DECODER_PREFIX) for k in state):
        log.info(
            "%s holds no %s* keys (an encoder-only checkpoint): the decoder starts fresh", path, MASK_DECODER_PREFIX
        )
        return []
    own = decoder.state_dict()
    picked = {}
    for key in own:
        if key.startswith(("transformer.", "output_upscaling.")):
            source = MASK_DECODER_PREFIX + key
        elif key.startswith("pe_layer."):
            source = PROMPT_ENCODER_PREFIX + key
        else:
            continue
        if source not in state or state[source].shape != own[key].shape:
            have = tuple(state[source].shape) if source in state else "missing"
            raise InputError(path, f"{source} is {have}, the decoder needs {tuple(own[key].shape)}")
        picked[key] = state[source]
    decoder.load_state_dict(picked, strict=False)
    return sorted(picked)
