"""Score every method's saved test predictions and write the metrics, the summary, the tables and the figures.

OUT holds JSON only, so that it can be a DVC metrics folder (DVC reads every file in one as metrics);
the tables and figures are for people and go to their own folders.

Outputs (each folder replaced atomically, only once everything has been computed, so a bad input
leaves no partial summary):

    OUT/<method>/metrics.json      headline numbers with CIs (`plaque.eval.report.method_metrics`)
    OUT/summary.json               per method macro Dice and Dice per class; paired comparison with ours
    TABLES/summary.md              the results table (one row per method) with its notes
    TABLES/<method>_per_patient.csv    per-patient Dice, HD95, volumes
    TABLES/<method>_confusion.csv      pixel counts, rows = truth, columns = prediction
    TABLES/model_card_<method>.md      what the model is, its data, profile, weights, Dice and intended use
    FIGURES/qualitative.{png,pdf}      the paper's Figure 1 layout (rows: `plaque.eval.figures.select_rows`)
    FIGURES/dice_bars, confusion, bland_altman_<method>, training_curves (when runs have DVCLive curves),
                                   learning_curves (validation Dice per class against training images seen)

The qualitative figure shows the registry's figure methods (`plaque.methods`), those that have predictions; its
rows are chosen on the per-slice macro Dice of ``ours`` (of the first method when there is no ours),
and it is cropped to the square around every foreground pixel shown (`focus_box`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from plaque.atomic import atomic_folder
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.data.processed import Processed, load_processed
from plaque.errors import InputError
from plaque.eval import figures
from plaque.eval.cards import model_card
from plaque.eval.metrics import PatientScores, score_patient
from plaque.eval.predictions import load_method, method_folders, test_rows
from plaque.eval.report import (
    REFERENCE,
    RUN_FIELDS,
    VOLUME_KINDS,
    compare_with_reference,
    foreground_mean,
    method_metrics,
    patient_volumes,
    per_patient_table,
    summary,
    summary_markdown,
)
from plaque.methods import METHODS, figure_methods, method_label, order_methods
from plaque.schedule import describe, describe_paper

log = logging.getLogger("plaque.eval")
CURVES = ("train/loss", "val/macro_dice")  # what the training-curves figure shows, per epoch
# what the learning-curves figure shows against the training images seen, where a run logged them
LEARNING = tuple(f"val/dice_{CLASS_NAMES[c]}" for c in FOREGROUND)


def score_method(
    method: str, folder: Path, preds: Mapping[str, np.ndarray], processed: Processed, step_mm: float
) -> list[PatientScores]:
    """Per-patient scores of one method's checked predictions (`load_method` of ``folder``), patients sorted."""
    spacing = processed.manifest["spacing_mm"].to_numpy(dtype=np.float64)
    scores = []
    for patient, rows in test_rows(processed).items():
        try:
            scores.append(
                score_patient(patient, preds[patient], np.asarray(processed.labels[rows]), spacing[rows], step_mm)
            )
        except ValueError as e:
            raise InputError(folder / f"{patient}.npz", f"method {method}, patient {patient}: {e}") from None
    return scores


def slice_macro_dice(scores: Sequence[PatientScores]) -> np.ndarray:
    """``(N,)`` per-slice macro Dice over the foreground classes, slices in test-row order; NaN when none counts."""
    return foreground_mean(np.concatenate([s.slice_dice for s in scores]))


def focus_box(*label_maps: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """The square around every foreground pixel of ``label_maps`` (each (R, H, W)) plus ``margin`` pixels,
    kept inside the slice: the qualitative figure shows the vessel, not the whole cross-section."""
    fg = np.any(np.stack([m > 0 for m in label_maps]), axis=(0, 1))
    h, w = fg.shape
    if not fg.any():
        return slice(0, h), slice(0, w)
    ys, xs = np.nonzero(fg)
    side = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 + 2 * margin
    side = min(side, h, w)
    cy, cx = (ys.min() + ys.max() + 1) // 2, (xs.min() + xs.max() + 1) // 2
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def build_figures(
    all_scores: Mapping[str, list[PatientScores]],
    preds: Mapping[str, Mapping[str, np.ndarray]],
    processed: Processed,
    metrics: Mapping[str, Mapping[str, Any]],
    runs: Path | None,
    cfg_eval: Mapping[str, Any],
) -> dict[str, Figure]:
    """Name → figure, for every figure the data allow."""
    rows_by_patient = test_rows(processed)
    rows = np.concatenate(list(rows_by_patient.values()))
    reference = REFERENCE if REFERENCE in all_scores else next(iter(all_scores))
    picked, hard = figures.select_rows(
        slice_macro_dice(all_scores[reference]),
        cfg_eval["qualitative"]["representative"],
        cfg_eval["qualitative"]["hard"],
    )
    shown = [m for m in figure_methods() if m in preds] or [reference]
    stacked = {m: np.concatenate([preds[m][p] for p in rows_by_patient]) for m in shown}
    patients = np.concatenate([[p] * len(r) for p, r in rows_by_patient.items()])
    truth = np.asarray(processed.labels[rows[picked]])
    shown_preds = {method_label(m): stacked[m][picked] for m in shown}
    ys, xs = focus_box(truth, *shown_preds.values())
    out = {
        "qualitative": figures.qualitative_grid(
            np.asarray(processed.images[rows[picked]])[:, ys, xs],
            truth[:, ys, xs],
            {m: p[:, ys, xs] for m, p in shown_preds.items()},
            hard,
            row_labels=[f"{patients[i]} #{int(rows[i])}" for i in picked],
        )
    }
    out["dice_bars"] = figures.dice_bars(
        {
            m["label"]: {
                name: tuple(np.nan if v[k] is None else v[k] for k in ("mean", "low", "high"))
                for name, v in m["dice"].items()
            }
            for m in metrics.values()
        }
    )
    out["confusion"] = figures.confusion_plot(
        {method_label(m): np.sum([s.confusion for s in scores], axis=0) for m, scores in all_scores.items()}
    )
    for m, scores in all_scores.items():
        out[f"bland_altman_{m}"] = figures.bland_altman_plots(
            {kind: patient_volumes(scores, kind) for kind in VOLUME_KINDS}, method=method_label(m)
        )
    curves, learning = {}, {}
    for m in all_scores:
        live = runs / m / "live" if runs is not None else None
        if live is not None and live.is_dir():
            curves[method_label(m)] = {c: figures.read_dvclive_curve(live, c) for c in CURVES}
            wanted = (figures.IMAGES, *LEARNING)
            if all(figures.dvclive_curve_path(live, c).is_file() for c in wanted):
                learning[method_label(m)] = {c: figures.read_dvclive_curve(live, c) for c in wanted}
    if curves:
        out["training_curves"] = figures.training_curves(curves, CURVES)
    if learning:
        out["learning_curves"] = figures.learning_curves(learning, LEARNING)
    return out


def prior_backbones(stage1_runs: Path | None, methods: Sequence[str]) -> dict[str, str]:
    """For each of ``methods`` that reads a Stage-1 prior (`plaque.methods`), the LPIPS backbone its prior
    trained with, from ``STAGE1_RUNS/<variant>/metrics.json``: ``pretrained``, ``random``, or ``unknown`` when the
    file is missing or does not say; empty without ``stage1_runs``."""
    out: dict[str, str] = {}
    for m in methods:
        spec = METHODS.get(m)
        if stage1_runs is None or spec is None or spec.prior is None:
            continue
        path = stage1_runs / spec.prior / "metrics.json"
        out[m] = json.loads(path.read_text()).get("perceptual_backbone", "unknown") if path.is_file() else "unknown"
    return out


def run_context(
    runs: Path | None,
    methods: Sequence[str],
    processed: Processed,
    cfg: Mapping[str, Any],
    stage1_runs: Path | None = None,
) -> dict:
    """Profile, cohort and, from ``RUNS/<method>/metrics.json`` when present, each method's training run
    (`RUN_FIELDS`; ``backbone_weights`` also on its own, ``"unknown"`` when the run does not say), and the LPIPS
    backbone of each method's Stage-1 prior (`prior_backbones`)."""
    record = {}
    for m in methods:
        path = runs / m / "metrics.json" if runs is not None else None
        if path is not None and path.is_file():
            run = json.loads(path.read_text())
            record[m] = {k: run.get(k) for k in RUN_FIELDS}
    test = processed.manifest[processed.manifest["split"] == "test"]
    per_patient = test.groupby("patient")[[f"count_{c}" for c in FOREGROUND]].sum() > 0
    with_class = {CLASS_NAMES[c]: int(per_patient[f"count_{c}"].sum()) for c in FOREGROUND}
    return {
        "profile": cfg["profile"],
        "runs": record,
        "backbone_weights": {m: r["backbone_weights"] or "unknown" for m, r in record.items()},
        "perceptual_backbone": prior_backbones(stage1_runs, methods),
        "bootstrap_resamples": cfg["eval"]["bootstrap_resamples"],
        "optimiser": {
            "run": describe(cfg["train"], cfg["stage2"]["optim"]),
            "paper": describe_paper(cfg["stage2"]["optim"]),
        },
        "augmentation": {
            "run": describe_augmentation(cfg["augment"]),
            "paper": f"random rotation, p {cfg['augment']['rotation_p']:g}",
        },
        "patients": int(test["patient"].nunique()),
        "patients_with_class": with_class,
        "cohort": f"{test['patient'].nunique()} test patients ({with_class['calcified']} with calcified, "
        f"{with_class['non_calcified']} with non-calcified plaque), {len(test)} cross-sections",
    }


def describe_augmentation(augment: Mapping[str, Any]) -> str:
    """The ``augment`` section in words, e.g. ``"random rotation (p 0.5, up to 15°), centre shift up to 1 mm"``."""
    parts = []
    if augment["rotation_p"] > 0:
        parts.append(f"random rotation (p {augment['rotation_p']:g}, up to {augment['rotation_max_deg']:g}°)")
    if augment["shift_mm"] > 0:
        parts.append(f"centre shift up to {augment['shift_mm']:g} mm")
    return ", ".join(parts) or "none"


def evaluate(
    pred_root: Path,
    data: Path,
    out: Path,
    figures_dir: Path | None,
    cfg: Mapping[str, Any],
    *,
    runs: Path | None = None,
    stage1_runs: Path | None = None,
    tables_dir: Path | None = None,
) -> dict[str, Any]:
    """Score every method under ``pred_root`` against ``data``'s test split and write the outputs; returns the summary.

    Args:
        pred_root: folder of method folders (or one method folder) of ``<patient>.npz`` predictions.
        data: processed dataset (`plaque.data.processed`) holding the ground truth.
        out: results folder (``results/eval``).
        figures_dir: figures folder (``reports/figures``), or ``None`` for no figures.
        cfg: resolved params (``eval`` and ``profile`` are read).
        runs: folder of training runs (``results/stage2``: ``<method>/metrics.json``, ``<method>/live``), optional.
        stage1_runs: folder of Stage-1 runs (``results/stage1``: ``<variant>/metrics.json``), optional.
        tables_dir: tables folder (``reports/tables``), or ``None`` for no tables.
    """
    processed = load_processed(data)
    step_mm = float(processed.summary.get("step_mm", cfg["preprocess"]["step_mm"]))
    folders = method_folders(pred_root)
    methods = order_methods(list(folders))
    all_scores, preds = {}, {}
    for m in methods:
        log.info("scoring %s", m)
        preds[m] = load_method(folders[m], m, processed)
        all_scores[m] = score_method(m, folders[m], preds[m], processed, step_mm)
    metrics = {m: method_metrics(m, s, cfg["eval"]) for m, s in all_scores.items()}
    summ = summary(
        metrics,
        compare_with_reference(all_scores, cfg["eval"]),
        run_context(runs, methods, processed, cfg, stage1_runs),
    )
    table = summary_markdown(summ)
    figs = build_figures(all_scores, preds, processed, metrics, runs, cfg["eval"]) if figures_dir is not None else {}
    with atomic_folder(Path(out)) as tmp:
        for m in methods:
            (tmp / m).mkdir()
            (tmp / m / "metrics.json").write_text(json.dumps(metrics[m], indent=2))
        (tmp / "summary.json").write_text(json.dumps(summ, indent=2))
    if tables_dir is not None:
        with atomic_folder(Path(tables_dir)) as tmp:
            (tmp / "summary.md").write_text(table)
            for m in methods:
                (tmp / f"model_card_{m}.md").write_text(model_card(m, summ, cfg["data"]["raw"], processed.summary))
                per_patient_table(all_scores[m]).to_csv(tmp / f"{m}_per_patient.csv", index=False, float_format="%.6g")
                confusion = np.sum([s.confusion for s in all_scores[m]], axis=0)
                header = "truth\\pred," + ",".join(CLASS_NAMES)
                rows = [f"{CLASS_NAMES[i]}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(confusion)]
                (tmp / f"{m}_confusion.csv").write_text("\n".join([header, *rows]) + "\n")
    if figures_dir is not None:
        with atomic_folder(Path(figures_dir)) as tmp:
            for name, fig in figs.items():
                figures.save_figure(fig, tmp, name)
    log.info("evaluated %d method(s) on %s", len(methods), summ["cohort"])
    return summ
