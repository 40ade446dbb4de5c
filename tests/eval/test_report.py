"""From per-patient scores to metrics.json, the comparison with ours, the results table and the README section."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from plaque.classes import CALCIFIED, NONCALCIFIED, NUM_CLASSES, WALL
from plaque.eval.metrics import PatientScores, score_patient
from plaque.eval.report import (
    compare_with_reference,
    method_metrics,
    patient_macro_dice,
    patient_volumes,
    per_patient_table,
    summary,
    summary_markdown,
)

NAN = math.nan
CFG_EVAL = {"bootstrap_resamples": 400, "seed": 0, "ci_level": 0.95}


def scores(
    patient: str,
    dice_fg: Sequence[float],
    *,
    vol_true: Sequence[float] = (0.0,) * NUM_CLASSES,
    vol_pred: Sequence[float] = (0.0,) * NUM_CLASSES,
    capped: Sequence[int] = (0,) * NUM_CLASSES,
    n_slices: int = 2,
) -> PatientScores:
    """Hand-built scores: ``dice_fg`` for classes 1..4 (background's Dice is 0, which must never count);
    IoU, HD95 and ASSD derived from it with the same NaN pattern."""
    dice = np.array([0.0, *dice_fg], dtype=np.float64)
    return PatientScores(
        patient=patient,
        n_slices=n_slices,
        dice=dice,
        iou=dice / (2 - dice),
        hd95_mm=np.where(np.isnan(dice), NAN, 10.0 * (1 - dice)),
        assd_mm=np.where(np.isnan(dice), NAN, 1 - dice),
        capped_slices=np.array(capped, dtype=np.int64),
        volume_true_mm3=np.array(vol_true, dtype=np.float64),
        volume_pred_mm3=np.array(vol_pred, dtype=np.float64),
        confusion=np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64),
        slice_dice=np.tile(dice, (n_slices, 1)),
    )


def trio() -> list[PatientScores]:
    return [
        scores("A", [1.0, 0.5, NAN, 0.4], capped=(0, 1, 0, 2, 0), n_slices=3),
        scores("B", [0.8, 0.7, NAN, NAN], capped=(0, 0, 0, 1, 4), n_slices=2),
        scores("C", [0.6, 0.9, 0.3, NAN], n_slices=4),
    ]


# ------------------------------------------------------------------------------------------ metrics


def test_patient_macro_dice_ignores_excluded_classes_and_background() -> None:
    macro = patient_macro_dice(
        [scores("A", [1.0, 0.5, NAN, NAN]), scores("B", [0.2, 0.4, 0.6, 0.8]), scores("C", [NAN] * 4)]
    )
    assert macro[:2] == pytest.approx([0.75, 0.5]) and np.isnan(macro[2])


def test_method_metrics_means_excluded_counts_and_capped_slices() -> None:
    m = method_metrics("sam_lora", trio(), CFG_EVAL)
    assert m["method"] == "sam_lora" and m["label"] == "SAM+LoRA"
    assert m["patients"] == 3 and m["slices"] == 9
    macro = m["macro_dice"]
    assert macro["mean"] == pytest.approx(np.mean([1.9 / 3, 0.75, 0.6]))
    assert macro["low"] < macro["mean"] < macro["high"]
    dice = m["dice"]
    assert dice["vessel_wall"]["mean"] == pytest.approx(0.8) and dice["vessel_wall"]["excluded"] == 0
    assert dice["lumen"]["mean"] == pytest.approx(0.7) and dice["lumen"]["excluded"] == 0
    assert dice["calcified"]["mean"] == pytest.approx(0.3) and dice["calcified"]["excluded"] == 2
    assert dice["non_calcified"]["mean"] == pytest.approx(0.4) and dice["non_calcified"]["excluded"] == 2
    # one patient left: the interval collapses onto it
    assert dice["calcified"]["low"] == dice["calcified"]["high"] == pytest.approx(0.3)
    assert m["hd95_mm"]["vessel_wall"]["mean"] == pytest.approx(10 * np.mean([0.0, 0.2, 0.4]))
    assert m["hd95_mm"]["calcified"]["excluded"] == 2 and m["assd_mm"]["non_calcified"]["excluded"] == 2
    assert {k: v["capped_slices"] for k, v in m["hd95_mm"].items()} == {
        "vessel_wall": 1,
        "lumen": 0,
        "calcified": 3,
        "non_calcified": 4,
    }
    assert m["bootstrap"] == {"resamples": 400, "seed": 0, "level": 0.95}


def test_method_metrics_from_scored_stacks_follow_the_empty_rule() -> None:
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = WALL
    truth[:, 3:5, 3:5] = CALCIFIED
    spacing, step = np.array([0.5, 0.5]), 0.5
    exact = score_patient("A", truth, truth, spacing, step)  # no non-calcified anywhere: excluded
    wrong = truth.copy()
    wrong[0, 2, 2] = NONCALCIFIED  # predicted but absent: Dice 0, counted
    spurious = score_patient("B", wrong, truth, spacing, step)
    m = method_metrics("ours", [exact, spurious], CFG_EVAL)
    assert m["dice"]["non_calcified"]["mean"] == 0.0 and m["dice"]["non_calcified"]["excluded"] == 1
    assert m["dice"]["lumen"]["mean"] is None and m["dice"]["lumen"]["excluded"] == 2
    assert m["hd95_mm"]["non_calcified"]["capped_slices"] == 1
    # patient A: wall and calcified perfect → 1; patient B: wall < 1, calcified 1, non-calcified 0
    assert patient_macro_dice([exact])[0] == 1.0
    assert m["macro_dice"]["mean"] == pytest.approx((1.0 + (spurious.dice[WALL] + 1.0 + 0.0) / 3) / 2)


VOL_TRUE = [(0, 900, 400, 10, 20), (0, 950, 300, 5, 0), (0, 800, 350, 0, 30)]
VOL_PRED = [(0, 100, 100, 12, 15), (0, 100, 100, 5, 3), (0, 100, 100, 2, 28)]


def volume_trio() -> list[PatientScores]:
    return [scores(p, [0.9] * 4, vol_true=t, vol_pred=q) for p, t, q in zip("ABC", VOL_TRUE, VOL_PRED)]


def test_volume_kinds_total_is_calcified_plus_non_calcified() -> None:
    s = volume_trio()
    pred, true = patient_volumes(s, "total_plaque")
    assert pred.tolist() == [27, 8, 30] and true.tolist() == [30, 5, 30]  # wall and lumen never count
    assert [a.tolist() for a in patient_volumes(s, "calcified")] == [[12, 5, 2], [10, 5, 0]]
    assert [a.tolist() for a in patient_volumes(s, "non_calcified")] == [[15, 3, 28], [20, 0, 30]]
    vol = method_metrics("ours", s, CFG_EVAL)["volume"]
    assert set(vol) == {"calcified", "non_calcified", "total_plaque"}
    assert vol["total_plaque"]["bias"] == pytest.approx(0.0) and vol["total_plaque"]["mae_mm3"] == pytest.approx(2.0)
    assert vol["total_plaque"]["sd"] == pytest.approx(3.0) and vol["total_plaque"]["n"] == 3
    assert vol["total_plaque"]["upper"] == pytest.approx(1.96 * 3.0)
    assert vol["calcified"]["bias"] == pytest.approx(4 / 3) and vol["calcified"]["mae_mm3"] == pytest.approx(4 / 3)
    assert vol["non_calcified"]["bias"] == pytest.approx(-4 / 3)
    assert vol["non_calcified"]["mae_mm3"] == pytest.approx(10 / 3)
    assert vol["total_plaque"]["pearson_r"] == pytest.approx(np.corrcoef([27, 8, 30], [30, 5, 30])[0, 1])
    assert -1.0 <= vol["total_plaque"]["icc_2_1"] <= 1.0

    table = per_patient_table(s)
    assert table["patient"].tolist() == ["A", "B", "C"]
    assert table["true_total_plaque_mm3"].tolist() == [30, 5, 30]
    assert table["pred_calcified_mm3"].tolist() == [12, 5, 2]
    assert table["macro_dice"].tolist() == pytest.approx([0.9] * 3)


def test_metrics_json_has_null_never_nan() -> None:
    # one patient, a class nobody has, constant volumes: sd, r, ICC and that class's Dice are undefined
    one = [scores("A", [0.9, 0.8, NAN, NAN], vol_true=(0, 1, 1, 0, 0), vol_pred=(0, 1, 1, 0, 0))]
    m = method_metrics("ours", one, CFG_EVAL)
    text = json.dumps(m, allow_nan=False)
    back = json.loads(text)
    assert back["dice"]["calcified"] == {"mean": None, "low": None, "high": None, "excluded": 1}
    assert back["hd95_mm"]["calcified"]["mean"] is None
    assert back["volume"]["total_plaque"]["sd"] is None and back["volume"]["total_plaque"]["pearson_r"] is None
    assert back["volume"]["total_plaque"]["bias"] == 0.0
    json.dumps(summary({"ours": m}, {}, {"profile": "smoke"}), allow_nan=False)


# ------------------------------------------------------------------------------------- comparison


OURS = [[0.90, 0.90, 0.80, 0.85], [0.85, 0.80, 0.90, 0.75], [0.80, 0.85, 0.95, 0.70], [0.95, 0.90, 0.85, 0.80]]
OTHER = [[0.60, 0.70, 0.50, 0.55], [0.70, 0.60, 0.70, 0.65], [0.65, 0.55, 0.60, 0.50], [0.50, 0.60, 0.70, 0.60]]


def cohort(dice: list[list[float]], patients: str = "ABCD") -> list[PatientScores]:
    return [scores(p, d) for p, d in zip(patients, dice)]


def test_comparison_is_ours_minus_method() -> None:
    comp = compare_with_reference({"ours": cohort(OURS), "sam_lora": cohort(OTHER)}, CFG_EVAL)
    assert list(comp) == ["sam_lora"]
    macro = comp["sam_lora"]["macro_dice"]
    expected = np.mean(np.mean(OURS, axis=1) - np.mean(OTHER, axis=1))
    assert macro["ours_minus_method"] == pytest.approx(expected) and expected > 0
    assert 0 < macro["low"] <= macro["ours_minus_method"] <= macro["high"]
    assert macro["p_value"] == 0.0 and macro["patients"] == 4
    assert comp["sam_lora"]["dice_vessel_wall"]["ours_minus_method"] == pytest.approx(
        np.mean(np.array(OURS)[:, 0] - np.array(OTHER)[:, 0])
    )
    assert set(comp["sam_lora"]) == {
        "macro_dice",
        "dice_vessel_wall",
        "dice_lumen",
        "dice_calcified",
        "dice_non_calcified",
    }

    worse = compare_with_reference({"ours": cohort(OTHER), "nnunet": cohort(OURS)}, CFG_EVAL)
    assert worse["nnunet"]["macro_dice"]["ours_minus_method"] == pytest.approx(-expected)
    assert worse["nnunet"]["macro_dice"]["high"] < 0


def test_comparison_refuses_different_patients_and_needs_ours() -> None:
    with pytest.raises(ValueError, match="sam_lora"):
        compare_with_reference({"ours": cohort(OURS), "sam_lora": cohort(OTHER, "ABCE")}, CFG_EVAL)
    with pytest.raises(ValueError, match="sam_lora"):
        compare_with_reference({"ours": cohort(OURS), "sam_lora": cohort(OTHER, "BACD")}, CFG_EVAL)
    with pytest.raises(ValueError, match="sam_lora"):
        compare_with_reference({"ours": cohort(OURS), "sam_lora": cohort(OTHER[:3], "ABC")}, CFG_EVAL)
    assert compare_with_reference({"sam_lora": cohort(OTHER), "nnunet": cohort(OURS)}, CFG_EVAL) == {}


# ------------------------------------------------------------------------------------------ table


CONTEXT = {"profile": "smoke", "bootstrap_resamples": 400, "patients": 4, "cohort": "4 test patients, 8 cross-sections"}


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Method label → its cells (vessel wall, lumen, calcified, non-calcified, macro Dice) of the first table."""
    lines = []
    for line in markdown.splitlines():
        if not line.startswith("|"):
            break
        lines += [line] if line.startswith("| ") else []
    assert lines[0] == "| method | vessel wall | lumen | calcified | non-calcified | macro Dice |"
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])}


def three_methods() -> tuple[dict, dict]:
    all_scores = {
        "ours": cohort(OURS),
        "sam_lora": cohort(
            [[0.6, 0.95, 0.5, 0.55], [0.7, 0.95, 0.7, 0.65], [0.65, 0.95, 0.6, 0.5], [0.5, 0.95, 0.7, 0.6]]
        ),
        "nnunet": cohort([[0.5, 0.5, 0.5, NAN]] * 4),
    }
    metrics = {m: method_metrics(m, s, CFG_EVAL) for m, s in all_scores.items()}
    return metrics, compare_with_reference(all_scores, CFG_EVAL)


def test_summary_markdown_bolds_the_best_per_column_and_shows_missing_as_na() -> None:
    metrics, comparison = three_methods()
    summ = summary(metrics, comparison, {**CONTEXT, "backbone_weights": {"ours": "pretrained"}})
    markdown = summary_markdown(summ)
    rows = table_rows(markdown)
    assert list(rows) == ["Ours", "SAM+LoRA", "nnU-Net"]
    bold = {label: [cell.startswith("**") for cell in cells] for label, cells in rows.items()}
    assert bold == {
        "Ours": [True, False, True, True, True],
        "SAM+LoRA": [False, True, False, False, False],
        "nnU-Net": [False, False, False, False, False],
    }
    assert rows["Ours"][0] == "**0.875** [{:.3f}, {:.3f}]".format(
        metrics["ours"]["dice"]["vessel_wall"]["low"], metrics["ours"]["dice"]["vessel_wall"]["high"]
    )
    assert rows["nnU-Net"][3] == "n/a"
    assert rows["nnU-Net"][2] == "0.500 [0.500, 0.500]"
    assert "randomly initialised" not in markdown
    assert "Profile `smoke`" in markdown and "4 test patients, 8 cross-sections" in markdown
    assert "mean over 4 patients" in markdown
    lines = markdown.splitlines()
    assert any(line.startswith("| SAM+LoRA | ours vs a baseline | +") for line in lines)  # the claims table
    assert any(line.startswith("| nnU-Net | ours vs a baseline | +") and "p < 1/400" in line for line in lines)


def test_summary_markdown_warns_about_a_random_backbone() -> None:
    metrics, comparison = three_methods()
    weights = {"ours": "random", "sam_lora": "pretrained", "nnunet": "random"}
    markdown = summary_markdown(summary(metrics, comparison, {**CONTEXT, "backbone_weights": weights}))
    (warning,) = [line for line in markdown.splitlines() if "randomly initialised" in line]
    assert "Ours" in warning and "nnU-Net" in warning and "SAM+LoRA" not in warning
    assert "not results of a pretrained SAM" in warning


def test_summary_markdown_warns_about_a_random_lpips_backbone_in_a_prior() -> None:
    metrics, comparison = three_methods()
    markdown = summary_markdown(summary(metrics, comparison, {**CONTEXT, "perceptual_backbone": {"ours": "random"}}))
    (warning,) = [line for line in markdown.splitlines() if "perceptual loss (LPIPS)" in line]
    assert "in the prior of Ours " in warning and "not the paper's LPIPS" in warning
    for backbones in ({"ours": "pretrained"}, {"ours": "unknown"}, {}):
        markdown = summary_markdown(summary(metrics, comparison, {**CONTEXT, "perceptual_backbone": backbones}))
        assert "LPIPS" not in markdown


def test_summary_markdown_bolds_nothing_for_a_single_method() -> None:
    metrics, _ = three_methods()
    markdown = summary_markdown(summary({"ours": metrics["ours"]}, {}, CONTEXT))
    assert "**" not in "\n".join(line for line in markdown.splitlines() if line.startswith("| "))
    assert list(table_rows(markdown)) == ["Ours"]


# ----------------------------------------------------------------------------------------- README


def test_summary_markdown_says_every_method_when_all_are_random() -> None:
    metrics, comparison = three_methods()
    weights = dict.fromkeys(metrics, "random")
    markdown = summary_markdown(summary(metrics, comparison, {**CONTEXT, "backbone_weights": weights}))
    (warning,) = [line for line in markdown.splitlines() if "randomly initialised" in line]
    assert "every method" in warning and "Ours" not in warning


def test_summary_markdown_says_every_sam_based_method_beside_one_without_encoder() -> None:
    metrics, comparison = three_methods()
    weights = {"ours": "random", "sam_lora": "random", "nnunet": "none"}
    markdown = summary_markdown(summary(metrics, comparison, {**CONTEXT, "backbone_weights": weights}))
    (warning,) = [line for line in markdown.splitlines() if "randomly initialised" in line]
    assert "every SAM-based method" in warning and "nnU-Net" not in warning
    weights = {"ours": "random", "sam_lora": "random", "nnunet": "pretrained"}
    markdown = summary_markdown(summary(metrics, comparison, {**CONTEXT, "backbone_weights": weights}))
    (warning,) = [line for line in markdown.splitlines() if "randomly initialised" in line]
    assert "of Ours; SAM+LoRA was" in warning, "labels listed with semicolons (labels hold commas)"


def test_the_claims_table_tests_each_comparison_on_wall_and_non_calcified() -> None:
    metrics, comparison = three_methods()
    markdown = summary_markdown(summary(metrics, comparison, CONTEXT))
    claims = markdown[markdown.index("The paper's claims, tested") :].splitlines()
    header = next(line for line in claims if line.startswith("| Ours vs"))
    assert header == "| Ours vs | tests | macro Dice | vessel wall | non-calcified | calcified |"
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
        for line in claims
        if line.startswith("| ") and not line.startswith(("| Ours vs", "|---"))
    }
    assert list(rows) == ["SAM+LoRA", "nnU-Net"]
    lora = rows["SAM+LoRA"]
    assert lora[0] == "ours vs a baseline"
    d = comparison["sam_lora"]["dice_vessel_wall"]
    verdict = "higher" if d["low"] > 0 else "lower" if d["high"] < 0 else "not separable"
    assert lora[2].startswith(f"{d['ours_minus_method']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
    assert lora[2].endswith(verdict)
    assert rows["nnU-Net"][3] == "n/a"  # nnU-Net's non-calcified Dice is excluded for every patient
