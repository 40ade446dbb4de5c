"""Model cards: one short markdown page per trained method, written with the results tables.

A card says what the model is, what it was trained on and with which compute profile and encoder weights,
how well it did on the test split (Dice with 95 % bootstrap intervals), and what it is for: research only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.config import PHANTOM
from plaque.eval.figures import display_name
from plaque.intended_use import INTENDED_USE, PHANTOM_CAVEAT
from plaque.methods import METHODS
from plaque.postprocess import describe_floor


def interval_text(entry: Mapping[str, Any]) -> str:
    """``0.812 [0.771, 0.850]``, or ``n/a``."""
    if entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def model_card(method: str, summ: Mapping[str, Any], data: str, preprocess: Mapping[str, Any]) -> str:
    """The card of ``method`` from the evaluation summary ``summ`` (`plaque.eval.report.summary`).

    Args:
        data: ``data.raw`` of params (``phantom`` or the user's raw folder).
        preprocess: the cross-section settings of the processed data (window, crop, step, size).
    """
    result = summ["methods"][method]
    run = summ.get("runs", {}).get(method, {})
    spec = METHODS.get(method)
    cohort = "the built-in synthetic phantom" if data == PHANTOM else f"the raw cohort `{data}`"
    seconds = run.get("train_seconds")
    lpips = summ.get("perceptual_backbone", {}).get(method)
    lines = [
        f"# Model card: {result['label']} (`{method}`)",
        "",
        f"**Intended use.** {INTENDED_USE}",
        "",
        "| | |",
        "|---|---|",
        f"| method | {result['label']}" + (f" ({spec.claim})" if spec is not None and spec.claim else "") + " |",
        f"| training data | {cohort}; cross-sections: window {preprocess.get('window_hu')} HU, "
        f"{preprocess.get('crop_px')} px crop, every {preprocess.get('step_mm')} mm, stored at "
        f"{preprocess.get('size')} px |",
        f"| profile | `{summ.get('profile', '?')}` |",
        f"| image encoder (weights) | {run.get('backbone') or 'n/a'} ({run.get('backbone_weights') or 'unknown'}) |",
        *(
            [f"| Stage-1 prior | `{spec.prior}`, its LPIPS backbone {lpips} |"]
            if spec is not None and spec.prior is not None and lpips is not None
            else []
        ),
        f"| trainable parameters | {run['trainable_parameters']:,} |"
        if run.get("trainable_parameters")
        else "| trainable parameters | n/a |",
        f"| training | {run.get('epochs_run') or '?'} epochs, "
        + (f"{seconds / 60:.1f} min" if seconds else "time n/a")
        + " |",
        f"| optimiser | {run.get('optimiser') or 'its own'}"
        + (f" (the paper's: {summ['optimiser']['paper']})" if summ.get("optimiser") else "")
        + " |",
        *(
            [
                f"| augmentation | {'its own' if spec is not None and spec.external else summ['augmentation']['run']}"
                f" (the paper's: {summ['augmentation']['paper']}) |"
            ]
            if summ.get("augmentation")
            else []
        ),
        f"| plaque floor | {describe_floor(run)} (chosen on the validation split; smaller plaque components become "
        "vessel wall) |",
        f"| test cohort | {summ.get('cohort', '?')} |",
        f"| macro Dice | {interval_text(result['macro_dice'])} |",
        *(
            f"| Dice {display_name(CLASS_NAMES[c])} | {interval_text(result['dice'][CLASS_NAMES[c]])} |"
            for c in FOREGROUND
        ),
        "",
        "Dice: mean over test patients, 95 % bootstrap interval over patients. Segment new scans with "
        f"`python -m plaque.segment --checkpoint models/stage2/{method}/best.pt --input DIR --out DIR`.",
    ]
    if data == PHANTOM:
        lines += ["", f"**Limitations.** {PHANTOM_CAVEAT}"]
    if run.get("backbone_weights") == "random":
        lines += ["", "**Its image encoder was randomly initialised**: this is not a pretrained SAM."]
    if lpips == "random":
        lines += [
            "",
            "**Its Stage-1 prior's perceptual loss ran on a randomly initialised backbone**: not the paper's LPIPS.",
        ]
    return "\n".join(lines) + "\n"
