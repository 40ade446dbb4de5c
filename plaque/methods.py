"""The Stage-2 methods: ours, its ablations and the SAM+LoRA and CAT-SAM baselines.

Every method is trained and predicted by `plaque.train.stage2`, evaluated by `plaque.eval`; a method fixes

- ``model``: ``prior_segmenter`` (`plaque.models.segmenter.PriorSegmenter`, every method but one) or
  ``cat_sam`` (`plaque.models.cat_sam.CatSamSegmenter`);
- ``fusion``: ``faa`` (the paper's FAA), ``add`` (the prior added after the adapter) or ``none``
  (no prior, no adapter, no FAA);
- ``prior``: the Stage-1 variant it reads (a key of params' ``priors``), ``None`` without prior;
- ``decoder`` / ``sam_tuning``: ``None`` takes ``stage2.decoder`` / ``stage2.sam_tuning`` from
  params, a value overrides them.

``sam_lora`` is SAMed's multi-class recipe: LoRA rank ``stage2.lora_rank`` on q and v of every
image-encoder block (always LoRA, even on a randomly initialised encoder, where the results table
says so), no prior, and SAM's mask decoder built for C class tokens with no prompts (the
``class_tokens`` decoder, which keeps SAM's mask-decoder layout). ``no_prior`` is ``ours`` without
the prior and FAA: the reference for the cost of the paper's idea in the benchmarks.
``cat_sam`` is CAT-SAM-T (Xiao et al., ECCV 2024) with a multi-class head: SAM frozen, one learnable
decoder token that prompts every image-encoder block, HQ-SAM's high-quality feature and a 1×1
C-class head conditioned on that token (no prior; its decoder is recorded as ``hq``; see
`plaque.models.cat_sam`). It keeps SAM frozen even on a randomly initialised encoder (the stage warns).
`EXTERNAL_METHODS` are trained by their own module (``nnunet``: the real nnU-Net v2,
`plaque.baselines.nnunet`) and write predictions for the same evaluator.
params' ``methods`` lists the methods `dvc repro` trains (one ``stage2@<method>`` stage each, any of
`PIPELINE_METHODS`) and
``priors`` the Stage-1 variants it trains (one ``stage1@<variant>`` stage each, checkpoint
``models/stage1/<variant>/best.pt``): `PRIOR_VARIANTS` says how each changes ``stage1.loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plaque.errors import InputError

MODELS = ("prior_segmenter", "cat_sam")


@dataclass(frozen=True)
class Method:
    """How a Stage-2 method differs from the params' defaults (see the module docstring)."""

    fusion: str
    prior: str | None
    decoder: str | None = None
    sam_tuning: str | None = None
    model: str = "prior_segmenter"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")


METHODS: dict[str, Method] = {
    "ours": Method(fusion="faa", prior="contrastive"),
    "ours_additive": Method(fusion="add", prior="contrastive"),
    "ours_class_tokens": Method(fusion="faa", prior="contrastive", decoder="class_tokens"),
    "ours_no_contrastive": Method(fusion="faa", prior="no_contrastive"),
    "no_prior": Method(fusion="none", prior=None),
    "sam_lora": Method(fusion="none", prior=None, decoder="class_tokens", sam_tuning="lora"),
    "cat_sam": Method(fusion="none", prior=None, decoder="hq", sam_tuning="frozen", model="cat_sam"),
}


# Methods params' ``methods`` may list that are trained by their own module, not by plaque.train.stage2
EXTERNAL_METHODS: dict[str, str] = {
    "nnunet": "plaque.baselines.nnunet",  # nnU-Net v2, 2D configuration
}
PIPELINE_METHODS: tuple[str, ...] = (*METHODS, *EXTERNAL_METHODS)


# Stage-1 variant -> overrides of stage1.loss
PRIOR_VARIANTS: dict[str, dict[str, float]] = {
    "contrastive": {},                      # the paper's prior
    "no_contrastive": {"contrastive": 0.0},  # ablation: a plain discrete prior (λcon = 0)
}


def prior_stage1(cfg_stage1: dict[str, Any], variant: str) -> dict[str, Any]:
    """The ``stage1`` section for Stage-1 ``variant`` (`PRIOR_VARIANTS`)."""
    if variant not in PRIOR_VARIANTS:
        raise InputError("--variant", f"{variant!r} is not one of {sorted(PRIOR_VARIANTS)}")
    return {**cfg_stage1, "loss": {**cfg_stage1["loss"], **PRIOR_VARIANTS[variant]}}


def get_method(name: str) -> Method:
    """The `Method` called ``name``; an `InputError` listing the known ones otherwise."""
    if name not in METHODS:
        raise InputError("--method", f"{name!r} is not one of {sorted(METHODS)}")
    return METHODS[name]


def method_stage2(cfg_stage2: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``stage2`` section as method ``name`` uses it: its decoder and SAM tuning filled in."""
    method = get_method(name)
    return {**cfg_stage2,
            "decoder": method.decoder or cfg_stage2["decoder"],
            "sam_tuning": method.sam_tuning or cfg_stage2["sam_tuning"]}
