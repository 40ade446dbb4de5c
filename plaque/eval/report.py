"""From per-patient scores to the numbers a reader sees: metrics.json per method, the summary, the table.

Headline numbers are means over patients with 95 % bootstrap intervals that resample patients
(``eval.bootstrap_resamples``, ``eval.seed``, ``eval.ci_level``). A patient's macro Dice is the
NaN-ignoring mean of its four foreground Dice scores. ``excluded`` counts the patients left out of a
class's mean because prediction and ground truth both lack the class (the empty rule of
`plaque.eval.metrics`); ``capped_slices`` counts slices whose surface distance used the cap.
Plaque volumes (calcified, non-calcified, total = both) are compared per patient: Bland–Altman bias
and limits, Pearson r, ICC(2,1), mean absolute error (mm³). Every other method is compared with the
reference method (``ours``) by a paired bootstrap of the per-patient difference.

JSON has no NaN: undefined numbers are written as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from plaque.classes import CALCIFIED, CLASS_NAMES, FOREGROUND, NONCALCIFIED, PLAQUE_CLASSES
from plaque.eval.figures import display_name
from plaque.eval.metrics import PatientScores
from plaque.eval.stats import (
    bland_altman,
    bootstrap_ci,
    bootstrap_ci_columns,
    icc_2_1,
    mean_absolute_error,
    paired_bootstrap,
    pearson_r,
)
from plaque.methods import METHODS, method_label, order_methods
from plaque.postprocess import describe_floor

REFERENCE = "ours"
VOLUME_KINDS: dict[str, tuple[int, ...]] = {
    "calcified": (CALCIFIED,),
    "non_calcified": (NONCALCIFIED,),
    "total_plaque": PLAQUE_CLASSES,
}
PER_CLASS_METRICS = ("dice", "iou", "hd95_mm", "assd_mm")
# What the results section says about each method's training run (its RUNS/<method>/metrics.json)
RUN_FIELDS = (
    "backbone",
    "backbone_weights",
    "trainable_parameters",
    "train_seconds",
    "epochs_run",
    "optimiser",
    "plaque_floor_mm3",
)


def finite(value: float) -> float | None:
    """``value`` as a float, or ``None`` when it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def foreground_mean(dice: np.ndarray) -> np.ndarray:
    """Rows of Dice scores ``(N, C)`` → ``(N,)`` NaN-ignoring mean over the foreground classes (NaN when all are)."""
    fg = dice[:, list(FOREGROUND)]
    counted = (~np.isnan(fg)).sum(axis=1)
    return np.where(counted > 0, np.nansum(fg, axis=1) / np.maximum(counted, 1), np.nan)


def patient_macro_dice(scores: Sequence[PatientScores]) -> np.ndarray:
    """``(P,)`` per-patient macro Dice over the foreground classes (NaN when every class was excluded)."""
    return foreground_mean(np.stack([s.dice for s in scores]))


def _bootstrap_args(cfg_eval: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the bootstrap functions from the ``eval`` section."""
    return {"n_resamples": cfg_eval["bootstrap_resamples"], "seed": cfg_eval["seed"], "level": cfg_eval["ci_level"]}


def patient_volumes(scores: Sequence[PatientScores], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(pred (P,), true (P,))`` plaque volume of ``kind`` (`VOLUME_KINDS`) in mm³."""
    classes = list(VOLUME_KINDS[kind])
    return (
        np.array([s.volume_pred_mm3[classes].sum() for s in scores]),
        np.array([s.volume_true_mm3[classes].sum() for s in scores]),
    )


def method_metrics(method: str, scores: Sequence[PatientScores], cfg_eval: Mapping[str, Any]) -> dict[str, Any]:
    """The ``metrics.json`` of one method (scalars only, nested by metric and class)."""
    boot = _bootstrap_args(cfg_eval)
    out: dict[str, Any] = {
        "method": method,
        "label": method_label(method),
        "patients": len(scores),
        "slices": int(sum(s.n_slices for s in scores)),
    }
    est, lo, hi = bootstrap_ci(patient_macro_dice(scores), **boot)
    out["macro_dice"] = {"mean": finite(est), "low": finite(lo), "high": finite(hi)}
    for metric in PER_CLASS_METRICS:
        values = np.stack([getattr(s, metric)[list(FOREGROUND)] for s in scores])  # (P, 4)
        est, lo, hi = bootstrap_ci_columns(values, **boot)
        out[metric] = {
            CLASS_NAMES[c]: {
                "mean": finite(est[k]),
                "low": finite(lo[k]),
                "high": finite(hi[k]),
                "excluded": int(np.isnan(values[:, k]).sum()),
            }
            for k, c in enumerate(FOREGROUND)
        }
    capped = np.sum([s.capped_slices for s in scores], axis=0)
    for c in FOREGROUND:
        out["hd95_mm"][CLASS_NAMES[c]]["capped_slices"] = int(capped[c])
    out["volume"] = {}
    for kind in VOLUME_KINDS:
        pred, true = patient_volumes(scores, kind)
        agreement = {k: finite(v) for k, v in bland_altman(pred, true).items()}
        agreement.update(
            pearson_r=finite(pearson_r(pred, true)),
            icc_2_1=finite(icc_2_1(pred, true)),
            mae_mm3=finite(mean_absolute_error(pred, true)),
        )
        out["volume"][kind] = agreement
    out["bootstrap"] = {"resamples": boot["n_resamples"], "seed": boot["seed"], "level": boot["level"]}
    return out


def per_patient_table(scores: Sequence[PatientScores]) -> pd.DataFrame:
    """One row per patient: Dice, HD95 per foreground class, macro Dice, true and predicted volumes."""
    rows = []
    for s, macro in zip(scores, patient_macro_dice(scores)):
        row: dict[str, Any] = {"patient": s.patient, "slices": s.n_slices, "macro_dice": macro}
        for c in FOREGROUND:
            row[f"dice_{CLASS_NAMES[c]}"] = s.dice[c]
            row[f"hd95_mm_{CLASS_NAMES[c]}"] = s.hd95_mm[c]
        for kind, classes in VOLUME_KINDS.items():
            row[f"true_{kind}_mm3"] = s.volume_true_mm3[list(classes)].sum()
            row[f"pred_{kind}_mm3"] = s.volume_pred_mm3[list(classes)].sum()
        rows.append(row)
    return pd.DataFrame(rows)


def compare_with_reference(
    all_scores: Mapping[str, Sequence[PatientScores]], cfg_eval: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Paired bootstrap of ``ours − method`` (macro Dice and Dice per class) for every other method."""
    if REFERENCE not in all_scores:
        return {}
    boot = _bootstrap_args(cfg_eval)
    ref = all_scores[REFERENCE]
    out = {}
    for method, scores in all_scores.items():
        if method == REFERENCE:
            continue
        if [s.patient for s in scores] != [s.patient for s in ref]:
            raise ValueError(f"{method} and {REFERENCE} were scored on different patients")
        pairs = {"macro_dice": (patient_macro_dice(ref), patient_macro_dice(scores))}
        pairs.update(
            {
                f"dice_{CLASS_NAMES[c]}": (np.array([s.dice[c] for s in ref]), np.array([s.dice[c] for s in scores]))
                for c in FOREGROUND
            }
        )
        out[method] = {}
        for key, (a, b) in pairs.items():
            r = paired_bootstrap(a, b, **boot)
            out[method][key] = {
                "ours_minus_method": finite(r.mean_diff),
                "low": finite(r.low),
                "high": finite(r.high),
                "p_value": finite(r.p_value),
                "patients": r.n,
            }
    return out


def summary(
    metrics: Mapping[str, Mapping[str, Any]], comparison: Mapping[str, Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    """``summary.json``: per method its macro Dice and Dice per class (mean, CI), the comparison with ours,
    and the ``context`` (profile, backbone weights per method, cohort)."""
    methods = {}
    for method, m in metrics.items():
        methods[method] = {
            "label": m["label"],
            "macro_dice": m["macro_dice"],
            "dice": {name: {k: v[k] for k in ("mean", "low", "high")} for name, v in m["dice"].items()},
            "hd95_mm": {name: v["mean"] for name, v in m["hd95_mm"].items()},
        }
    return {"reference": REFERENCE, "methods": methods, "ours_vs": dict(comparison), **context}


def _cell(entry: Mapping[str, Any], bold: bool, digits: int = 3) -> str:
    if entry.get("mean") is None:
        return "n/a"
    text = f"{entry['mean']:.{digits}f}"
    text = f"**{text}**" if bold else text
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


def summary_markdown(summ: Mapping[str, Any]) -> str:
    """The results table (one row per method, Dice per class and macro, 95 % CIs, best in bold) with its context."""
    methods = summ["methods"]
    columns = [(display_name(CLASS_NAMES[c]), lambda m, n=CLASS_NAMES[c]: m["dice"][n]) for c in FOREGROUND]
    columns.append(("macro Dice", lambda m: m["macro_dice"]))
    best = {}
    for title, get in columns:
        values = [get(m)["mean"] for m in methods.values() if get(m)["mean"] is not None]
        best[title] = max(values) if values else None
    lines = ["| method | " + " | ".join(t for t, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in methods.values():
        cells = [
            _cell(get(m), len(methods) > 1 and get(m)["mean"] is not None and get(m)["mean"] == best[t])
            for t, get in columns
        ]
        lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    weights = summ.get("backbone_weights", {})
    notes = [
        f"Test-set Dice, mean over {summ.get('patients', '?')} patients with 95 % bootstrap intervals "
        f"(patients resampled); best per column in bold. A patient's macro Dice averages the foreground "
        f"classes present in its ground truth or prediction (a class absent from both is left out). "
        f"Profile `{summ.get('profile', '?')}`, cohort: {summ.get('cohort', '?')}."
    ]
    if summ.get("optimiser"):
        notes.append(
            f"Optimiser of the Stage-2 methods: {summ['optimiser']['run']} (the paper's: {summ['optimiser']['paper']}); "
            "nnU-Net keeps its own."
        )
    if summ.get("augmentation"):
        notes.append(
            f"Augmentation of the methods our trainer trains: {summ['augmentation']['run']} (the paper's: "
            f"{summ['augmentation']['paper']}); nnU-Net keeps its own."
        )
    random = [method_label(m) for m, w in weights.items() if w == "random"]
    sam_based = [m for m, w in weights.items() if w != "none"]  # "none": a method without an image encoder
    if random:
        who = (
            "every method"
            if len(random) == len(methods) > 1
            else "every SAM-based method"
            if len(random) == len(sam_based) > 1
            else "; ".join(random)
        )
        notes.append(
            f"**The SAM image encoder of {who} was randomly initialised** "
            "(no pretrained weights): these are not results of a pretrained SAM."
        )
    lpips_random = [method_label(m) for m, b in summ.get("perceptual_backbone", {}).items() if b == "random"]
    if lpips_random:
        who = (
            "every method with a prior"
            if len(lpips_random) == len(summ["perceptual_backbone"]) > 1
            else "; ".join(lpips_random)
        )
        notes.append(
            f"**Stage-1's perceptual loss (LPIPS) ran on a randomly initialised backbone** in the prior of {who} "
            "(its ImageNet weights were not in torch's cache): not the paper's LPIPS."
        )
    claims, runs = claims_markdown(summ), runs_markdown(summ)
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n" + "".join(f"\n{part}" for part in (claims, runs) if part)


CLAIM_COLUMNS = ("macro_dice", "dice_vessel_wall", "dice_non_calcified", "dice_calcified")


def claims_markdown(summ: Mapping[str, Any]) -> str:
    """The paper's claims, tested: for every method compared with ours, the paired bootstrap of ``ours − method``
    on macro Dice and on the classes where the paper claims its largest gains (vessel wall, non-calcified
    plaque; calcified for completeness), with what the comparison tests (`plaque.methods.Method.claim`) and
    a verdict per column (higher / lower when the 95 % interval excludes 0, else not separable)."""
    comparisons = summ.get("ours_vs", {})
    if not comparisons:
        return ""
    resamples = summ.get("bootstrap_resamples")

    def cell(d: Mapping[str, Any]) -> str:
        if d["ours_minus_method"] is None:
            return "n/a"
        verdict = "higher" if d["low"] > 0 else "lower" if d["high"] < 0 else "not separable"
        p = f"p < 1/{resamples}" if d["p_value"] == 0 and resamples else f"p = {d['p_value']:.3f}"
        return f"{d['ours_minus_method']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {p}, {verdict}"

    titles = ["macro Dice", "vessel wall", "non-calcified", "calcified"]
    lines = [
        "The paper's claims, tested: Ours − each other method on the same test patients (paired bootstrap of "
        "the per-patient difference, 95 % interval, two-sided p); *higher*/*lower* when the interval excludes 0. "
        "Each column pairs only the patients that both methods are scored on (a class absent from a patient's "
        "truth and from a method's prediction leaves that patient out), so a difference here can differ from "
        "the difference of the two means above.",
        "",
        "| Ours vs | tests | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 2) + "|",
    ]
    for method in order_methods(list(comparisons)):
        claim = METHODS[method].claim if method in METHODS else None
        row = [cell(comparisons[method][k]) for k in CLAIM_COLUMNS]
        lines.append(f"| {method_label(method)} | {claim or 'n/a'} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def runs_markdown(summ: Mapping[str, Any]) -> str:
    """The training runs behind the table (trainable parameters, training time, epochs, image encoder and
    its weights), one row per method of the summary that has a run record; ``""`` when none has."""
    runs = summ.get("runs", {})
    rows = [m for m in summ["methods"] if m in runs]
    if not rows:
        return ""

    def fmt(value: Any, form: str) -> str:
        return "n/a" if value is None else form.format(value)

    lines = [
        "| method | trainable parameters | training time | epochs | encoder (weights) | optimiser | plaque floor |",
        "|---" * 7 + "|",
    ]
    for m in rows:
        r = runs[m]
        encoder = f"{r.get('backbone') or 'n/a'} ({r.get('backbone_weights') or 'unknown'})"
        params = fmt(r.get("trainable_parameters"), "{:,}")
        minutes = fmt(None if r.get("train_seconds") is None else r["train_seconds"] / 60, "{:.1f} min")
        lines.append(
            f"| {method_label(m)} | {params} | {minutes} | {fmt(r.get('epochs_run'), '{}')} | {encoder} "
            f"| {r.get('optimiser') or 'its own'} | {describe_floor(r)} |"
        )
    return (
        "\n".join(lines) + "\n\nTraining time: the training loop of the stage (validation included, test "
        "prediction not), on the machine that ran the pipeline. Plaque floor: plaque components smaller than "
        "this became vessel wall in the method's predictions, chosen on the validation split (`plaque.postprocess`).\n"
    )
