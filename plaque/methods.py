"""The method registry: every method the pipeline trains, predicts with and evaluates, and the Stage-1 variants.

A `Method` names everything the rest of the package needs to know about it, so that adding a baseline
means one entry here, its module, and its section in ``params.yaml``:

- ``label``: its name in tables and figures; ``figure``: its column in the qualitative figure (the
  paper's Figure 1 shows Ours, CAT-SAM, SAM+LoRA and nnU-Net), ``None`` when it is not shown.
- ``runner``: the module whose ``python -m`` trains it and writes its self-contained ``best.pt``:
  our Stage-2 trainer (`plaque.train.stage2`), or an external one (``nnunet``: the real nnU-Net v2,
  `plaque.baselines.nnunet`).
- ``model``: ``"module:function"`` that builds its network for our trainer (`plaque.models.build`);
  ``None`` for an external method.
- ``predictor``: ``"module:function"`` that turns its ``best.pt`` into a predictor of slices
  (`plaque.inference`), the one way every method predicts.
- ``params``: the ``params.yaml`` sections its stage reads (its DVC stage depends on exactly these).
- ``claim``: what comparing ours with it tests (a baseline, or the ablated part of the method), for the
  results' table of the paper's claims; ``None`` for ours.
- for our trainer: ``fusion`` (``faa``: the paper's FAA; ``add``: the prior added after the adapter;
  ``none``: no prior), ``prior`` (the Stage-1 variant it reads, a key of `PRIOR_VARIANTS`), and
  ``decoder`` / ``sam_tuning`` (``None`` takes ``stage2.decoder`` / ``stage2.sam_tuning``).

``sam_lora`` is SAMed's multi-class recipe: LoRA on q and v of every image-encoder block, no prior, SAM's
mask decoder built for C class tokens with no prompts. ``cat_sam`` is CAT-SAM-T (Xiao et al., ECCV 2024)
with a multi-class head on a frozen SAM. ``no_prior`` is ``ours`` without the prior and FAA: the
reference for the cost of the paper's idea in the benchmarks.

params' ``methods`` lists the methods `dvc repro` trains (one stage each) and ``priors`` the Stage-1
variants (one ``stage1-<variant>`` stage each); `PRIOR_VARIANTS` says how each changes ``stage1.loss``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from plaque.errors import InputError

STAGE2 = "plaque.train.stage2"
SEGMENTER = "plaque.models.segmenter:build_segmenter"
CAT_SAM = "plaque.models.cat_sam:build_cat_sam"
TORCH_PREDICTOR = "plaque.inference:segmenter_predictor"
STAGE2_PARAMS = ("train", "augment", "stage2")
BASELINE = "ours vs a baseline"
FUSIONS = ("faa", "add", "none")


@dataclass(frozen=True)
class Method:
    """What the package knows of one method (see the module docstring)."""

    name: str
    label: str
    runner: str = STAGE2
    model: str | None = SEGMENTER
    predictor: str = TORCH_PREDICTOR
    fusion: str = "none"
    prior: str | None = None
    decoder: str | None = None
    sam_tuning: str | None = None
    figure: int | None = None
    params: tuple[str, ...] = STAGE2_PARAMS
    claim: str | None = None

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if (self.prior is None) != (self.fusion == "none"):
            raise ValueError(f"fusion {self.fusion!r} {'needs' if self.prior is None else 'takes no'} prior")
        if (self.model is None) != (self.runner != STAGE2):
            raise ValueError("a method trained by our Stage-2 trainer names its model builder; an external one none")

    @property
    def external(self) -> bool:
        """Trained by its own module, not by our Stage-2 trainer."""
        return self.runner != STAGE2

    def command(
        self, *, data: str, out: str, results: str, predictions: str, prior: str | None, profile: str, nproc: int
    ) -> list[str]:
        """The arguments after ``python`` that train the method and predict the test split: our trainer under
        ``torchrun`` (``nproc`` processes, ``prior`` its Stage-1 checkpoint), an external runner as it is."""
        args = [
            "-m",
            self.runner,
            "--data",
            data,
            "--out",
            out,
            "--results",
            results,
            "--predictions",
            predictions,
            "--profile",
            profile,
        ]
        if self.external:
            return args
        launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        return [*launch, *args, "--method", self.name, *(["--prior", prior] if self.prior else [])]


def _ours(**kwargs: Any) -> Method:
    """A variant of ours: it reads a Stage-1 prior, so its stage also reads the ``stage1`` section."""
    return Method(**{"fusion": "faa", "prior": "contrastive", "params": (*STAGE2_PARAMS, "stage1"), **kwargs})


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _ours(name="ours", label="Ours", figure=0),
        Method("cat_sam", "CAT-SAM", model=CAT_SAM, decoder="hq", sam_tuning="frozen", figure=1, claim=BASELINE),
        Method("sam_lora", "SAM+LoRA", decoder="class_tokens", sam_tuning="lora", figure=2, claim=BASELINE),
        Method(
            "nnunet",
            "nnU-Net",
            runner="plaque.baselines.nnunet",
            model=None,
            predictor="plaque.baselines.nnunet.predictor:nnunet_predictor",
            figure=3,
            params=("nnunet",),
            claim=BASELINE,
        ),
        _ours(name="ours_additive", label="Ours, additive fusion", fusion="add", claim="FAA vs additive fusion"),
        _ours(
            name="ours_head",
            label="Ours, multi-class head",
            decoder="head",
            claim="class-token decoder vs multi-class head",
        ),
        _ours(
            name="ours_no_contrastive",
            label="Ours, prior without contrastive loss",
            prior="no_contrastive",
            claim="contrastive vs plain discrete prior",
        ),
        Method("no_prior", "Ours without prior", claim="prior and FAA vs no prior"),
    )
}

# Stage-1 variant -> overrides of stage1.loss
PRIOR_VARIANTS: dict[str, dict[str, float]] = {
    "contrastive": {},  # the paper's prior
    "no_contrastive": {"contrastive": 0.0},  # ablation: a plain discrete prior (λcon = 0)
}


def stage2_methods() -> list[str]:
    """The methods our Stage-2 trainer trains (every one but the external ones), in registry order."""
    return [name for name, spec in METHODS.items() if not spec.external]


def get_method(name: str) -> Method:
    """The `Method` called ``name``; an `InputError` listing the known ones otherwise."""
    if name not in METHODS:
        raise InputError("--method", f"{name!r} is not one of {sorted(METHODS)}")
    return METHODS[name]


def method_label(name: str) -> str:
    """Display name of a method (``ours`` → ``Ours``); unknown names are shown as they are."""
    return METHODS[name].label if name in METHODS else name


def order_methods(names: list[str] | tuple[str, ...]) -> list[str]:
    """The figure's methods in figure order, then the others alphabetically."""

    def key(name: str) -> tuple[int, str]:
        figure = METHODS[name].figure if name in METHODS else None
        return (figure if figure is not None else len(METHODS), name)

    return sorted(names, key=key)


def figure_methods() -> list[str]:
    """The methods of the qualitative figure, in its column order."""
    return order_methods([m for m, spec in METHODS.items() if spec.figure is not None])


def prior_stage1(cfg_stage1: dict[str, Any], variant: str) -> dict[str, Any]:
    """The ``stage1`` section for Stage-1 ``variant`` (`PRIOR_VARIANTS`)."""
    if variant not in PRIOR_VARIANTS:
        raise InputError("--variant", f"{variant!r} is not one of {sorted(PRIOR_VARIANTS)}")
    return {**cfg_stage1, "loss": {**cfg_stage1["loss"], **PRIOR_VARIANTS[variant]}}


def method_stage2(cfg_stage2: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``stage2`` section as method ``name`` uses it: its decoder and SAM tuning filled in."""
    method = get_method(name)
    return {
        **cfg_stage2,
        "decoder": method.decoder or cfg_stage2["decoder"],
        "sam_tuning": method.sam_tuning or cfg_stage2["sam_tuning"],
    }


def method_config(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The part of a resolved configuration method ``name`` reads: ``profile`` and its ``params`` sections (what its
    trained model records, and all that rebuilding it needs)."""
    return {"profile": cfg["profile"], **{section: cfg[section] for section in get_method(name).params}}


def import_object(path: str) -> Any:
    """The object ``"package.module:name"`` names, imported on demand (so a method loads only its own code)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
