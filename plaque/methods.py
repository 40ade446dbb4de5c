"""The Stage-2 methods: ours, its ablations and the SAM+LoRA baseline, as choices on one segmenter.

Every method is a `plaque.models.segmenter.PriorSegmenter` trained and predicted by
`plaque.train.stage2`, evaluated by `plaque.eval`; a method fixes

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
params' ``methods`` lists the methods `dvc repro` trains (one ``stage2@<method>`` stage each) and
``priors`` the Stage-1 variants it trains (one ``stage1@<variant>`` stage each, checkpoint
``models/stage1/<variant>/best.pt``): `PRIOR_VARIANTS` says how each changes ``stage1.loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plaque.errors import InputError

@dataclass(frozen=True)
class Method:
    """How a Stage-2 method differs from the params' defaults (see the module docstring)."""

    fusion: str
    prior: str | None
    decoder: str | None = None
    sam_tuning: str | None = None


METHODS: dict[str, Method] = {
    "ours": Method(fusion="faa", prior="contrastive"),
    "ours_additive": Method(fusion="add", prior="contrastive"),
    "ours_class_tokens": Method(fusion="faa", prior="contrastive", decoder="class_tokens"),
    "ours_no_contrastive": Method(fusion="faa", prior="no_contrastive"),
    "no_prior": Method(fusion="none", prior=None),
    "sam_lora": Method(fusion="none", prior=None, decoder="class_tokens", sam_tuning="lora"),
}


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
