"""Build a Stage-2 method's network from the registry (`plaque.methods`), and load trained ones back.

`build_model` is the one place that assembles what a method trains: the SAM image encoder (with the
checkpoint `plaque.models.sam.resolve_weights` finds, verified and loaded strictly, or randomly
initialised where ``stage2.weights`` is ``random``), how it is tuned, the frozen Stage-1 prior of
the method's variant, and the network the registry's ``model`` builder makes of them. Only that
builder's module is imported, so a method loads its own code and nothing of the others'.

`load_trained` rebuilds a trained network from its self-contained ``best.pt`` (method, resolved
configuration and weights in one file, `plaque.checkpoint.model_record`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from plaque.checkpoint import load_checkpoint, load_state_strictly
from plaque.config import RANDOM_WEIGHTS
from plaque.errors import InputError
from plaque.methods import get_method, import_object, method_stage2
from plaque.models.lora import configure_tuning
from plaque.models.sam import (
    build_image_encoder,
    load_sam_image_encoder,
    load_sam_mask_decoder,
    resolve_weights,
    weights_source,
)

if TYPE_CHECKING:
    from plaque.models.vq import VQAutoencoder

log = logging.getLogger(__name__)


def load_prior(cfg_stage1: dict[str, Any], path: Path | None) -> VQAutoencoder:
    """The frozen Stage-1 autoencoder of ``cfg_stage1``, with the weights of its ``best.pt`` at ``path`` (``None``:
    the architecture only)."""
    from plaque.models.vq import build_vq, freeze  # here, so that a method without a prior never loads it

    prior = build_vq(cfg_stage1)
    if path is not None:
        load_state_strictly(prior, load_checkpoint(path).get("model"), path, "a Stage-1 best.pt")
    return freeze(prior)  # type: ignore[return-value]


def build_model(
    cfg: dict[str, Any], method: str, prior_path: Path | None = None, *, pretrained: bool = True
) -> tuple[nn.Module, str]:
    """The network of ``method`` and what its image encoder starts from (`weights_source`, or ``"random"``).

    With SAM weights and a decoder that shares SAM's mask-decoder layout (the class-token decoder,
    CAT-SAM's output upscaling), those parts are loaded too (`load_sam_mask_decoder`). With
    ``pretrained=False`` neither SAM weights nor the Stage-1 checkpoint are read (``prior_path`` is
    ignored): the architecture only, to load a trained checkpoint into.

    Raises:
        InputError: an external method (trained by its own module), a prior method without
            ``prior_path``, or weights `resolve_weights` refuses.
    """
    spec = get_method(method)
    if spec.model is None:
        raise InputError("--method", f"{method} is trained by {spec.runner}, not by the Stage-2 trainer")
    s2 = method_stage2(cfg["stage2"], method)
    prior = None
    if spec.prior is not None:
        if pretrained and prior_path is None:
            raise InputError("--prior", f"method {method!r} needs the Stage-1 checkpoint ({spec.prior} variant)")
        prior = load_prior(cfg["stage1"], prior_path if pretrained else None)
    encoder = build_image_encoder(
        s2["backbone"], input_size=s2["input_size"], patch_size=s2["patch_size"], embed_dim=s2["embed_dim"]
    )
    weights = resolve_weights(s2) if pretrained else None
    if weights is not None:
        load_sam_image_encoder(encoder, weights, input_size=s2["input_size"], patch_size=s2["patch_size"])
    elif pretrained and s2["sam_tuning"] != "full":
        log.warning(
            "stage2.sam_tuning is %s on a RANDOMLY INITIALISED encoder: its random weights stay as they are "
            "(%s), so results are not those of %s on a pretrained SAM",
            s2["sam_tuning"],
            "only the LoRA updates train" if s2["sam_tuning"] == "lora" else "nothing in it trains",
            method,
        )
    configure_tuning(encoder, s2["sam_tuning"], s2["lora_rank"])
    model = import_object(spec.model)(s2, encoder, prior, fusion=spec.fusion)
    part = model.sam_mask_decoder_part()
    if weights is not None and part is not None:
        load_sam_mask_decoder(part, weights)
    return model, RANDOM_WEIGHTS if weights is None else weights_source(weights)


def load_trained(checkpoint: Path) -> nn.Module:
    """The trained network of a Stage-2 ``best.pt`` (method and configuration read from it), in eval mode.

    Raises:
        InputError: the file is missing or unreadable, is not a Stage-2 model record, or its weights
            do not fit the architecture its configuration describes.
    """
    ckpt = load_checkpoint(checkpoint)
    if not {"method", "config", "model"} <= set(ckpt):
        raise InputError(
            checkpoint,
            "is not a trained Stage-2 model (no method, config and model); retrain it with this version of plaque",
        )
    model, _ = build_model(ckpt["config"], ckpt["method"], pretrained=False)
    load_state_strictly(model, ckpt["model"], checkpoint, f"a {ckpt['method']} best.pt")
    return model.eval()
