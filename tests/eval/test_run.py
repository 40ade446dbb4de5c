"""The evaluate stage end to end on a tiny processed dataset: outputs, atomicity on bad input, the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from plaque.classes import CLASS_NAMES, NUM_CLASSES
from plaque.config import load_config
from plaque.errors import InputError
from plaque.eval.__main__ import main
from plaque.eval.run import describe_augmentation, evaluate, focus_box
from plaque.paths import repo_root
from tests.eval.factories import SIZE, TEST_PATIENTS, degrade, truth_by_patient, write_predictions, write_processed

RESAMPLES = 200
FIGURES = ("qualitative", "dice_bars", "confusion", "bland_altman_ours", "bland_altman_sam_lora")


def eval_cfg() -> dict[str, Any]:
    cfg = load_config(None, "smoke")
    cfg["eval"]["bootstrap_resamples"] = RESAMPLES
    return cfg


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dataset, predictions of ours (= ground truth) and sam_lora (degraded), and training runs."""
    work = tmp_path_factory.mktemp("eval-run")
    data = write_processed(work / "processed")
    preds = work / "predictions"
    write_predictions(preds / "sam_lora", data, degrade)
    write_predictions(preds / "ours", data)
    runs = work / "runs"
    records = {
        "ours": {
            "backbone_weights": "random",
            "backbone": "vit_tiny",
            "trainable_parameters": 1234567,
            "train_seconds": 150.0,
            "epochs_run": 6,
            "optimiser": "AdamW peak 0.001, weight decay 0.0001, warmup 5% of steps, cosine decay",
            "plaque_floor_mm3": {"calcified": 0.0, "non_calcified": 4.0},
            "macro_dice": 0.5,
        },
        "sam_lora": {"backbone_weights": "pretrained"},
    }
    for method, record in records.items():
        (runs / method).mkdir(parents=True)
        (runs / method / "metrics.json").write_text(json.dumps(record))
    stage1 = work / "stage1"
    (stage1 / "contrastive").mkdir(parents=True)  # ours reads this prior; sam_lora reads none
    (stage1 / "contrastive" / "metrics.json").write_text(json.dumps({"perceptual_backbone": "random"}))
    return {"work": work, "data": data, "preds": preds, "runs": runs, "stage1": stage1}


@pytest.fixture(scope="module")
def evaluated(inputs: dict[str, Path]) -> tuple[dict[str, Any], Path, Path]:
    out, figs = inputs["work"] / "out", inputs["work"] / "figures"
    summ = evaluate(
        inputs["preds"],
        inputs["data"],
        out,
        figs,
        eval_cfg(),
        runs=inputs["runs"],
        stage1_runs=inputs["stage1"],
        tables_dir=inputs["work"] / "tables",
    )
    return summ, out, figs


def test_perfect_method_scores_one_and_the_degraded_one_less(evaluated: tuple[dict[str, Any], Path, Path]) -> None:
    summ, out, _ = evaluated
    assert list(summ["methods"]) == ["ours", "sam_lora"]  # ours first
    ours, lora = summ["methods"]["ours"], summ["methods"]["sam_lora"]
    assert ours["macro_dice"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert all(v["mean"] == 1.0 for v in ours["dice"].values())
    assert all(v == 0.0 for v in ours["hd95_mm"].values())
    assert lora["macro_dice"]["mean"] < 0.8 and lora["dice"]["calcified"]["mean"] == 0.0
    assert summ["ours_vs"]["sam_lora"]["macro_dice"]["ours_minus_method"] == pytest.approx(
        1.0 - lora["macro_dice"]["mean"]
    )
    assert (
        summ["patients"] == 3
        and summ["cohort"] == "3 test patients (3 with calcified, 2 with non-calcified plaque), 9 cross-sections"
    )
    assert summ["patients_with_class"] == {"vessel_wall": 3, "lumen": 3, "calcified": 3, "non_calcified": 2}
    assert summ["backbone_weights"] == {"ours": "random", "sam_lora": "pretrained"}
    assert summ["perceptual_backbone"] == {"ours": "random"}  # sam_lora has no prior
    assert summ["runs"]["ours"] == {
        "backbone": "vit_tiny",
        "backbone_weights": "random",
        "trainable_parameters": 1234567,
        "train_seconds": 150.0,
        "epochs_run": 6,
        "optimiser": "AdamW peak 0.001, weight decay 0.0001, warmup 5% of steps, cosine decay",
        "plaque_floor_mm3": {"calcified": 0.0, "non_calcified": 4.0},
    }
    assert summ["runs"]["sam_lora"]["trainable_parameters"] is None
    assert summ["optimiser"]["paper"] == "AdamW 0.0001, weight decay 0.0001, constant"
    assert summ["augmentation"] == {
        "run": "random rotation (p 0.5, up to 15°), centre shift up to 1 mm",
        "paper": "random rotation, p 0.5",
    }
    assert summ["profile"] == "smoke" and summ["bootstrap_resamples"] == RESAMPLES
    assert json.loads((out / "summary.json").read_text()) == summ


def test_model_cards_state_data_weights_dice_and_intended_use(evaluated: tuple[dict[str, Any], Path, Path]) -> None:
    summ, out, _ = evaluated
    card = (out.parent / "tables" / "model_card_ours.md").read_text()
    assert card.startswith("# Model card: Ours (`ours`)") and "Research only" in card
    assert "built-in synthetic phantom" in card and "Profile" not in card and "`smoke`" in card
    assert "| image encoder (weights) | vit_tiny (random) |" in card and "1,234,567" in card
    assert "| macro Dice | 1.000 [1.000, 1.000] |" in card and "randomly initialised" in card
    assert (
        "| optimiser | AdamW peak 0.001, weight decay 0.0001, warmup 5% of steps, cosine decay "
        "(the paper's: AdamW 0.0001, weight decay 0.0001, constant) |" in card
    )
    assert (
        "| augmentation | random rotation (p 0.5, up to 15°), centre shift up to 1 mm "
        "(the paper's: random rotation, p 0.5) |" in card
    )
    assert "| plaque floor | non_calcified ≥ 4 mm³ (chosen on the validation split" in card
    assert "| Stage-1 prior | `contrastive`, its LPIPS backbone random |" in card
    assert "**Its Stage-1 prior's perceptual loss ran on a randomly initialised backbone**" in card
    lora = summ["methods"]["sam_lora"]["dice"]["calcified"]
    lora_card = (out.parent / "tables" / "model_card_sam_lora.md").read_text()
    assert "| plaque floor | none (" in lora_card and "Stage-1 prior" not in lora_card and "LPIPS" not in lora_card
    assert (
        f"| Dice calcified | {lora['mean']:.3f} [{lora['low']:.3f}, {lora['high']:.3f}] |"
        in (out.parent / "tables" / "model_card_sam_lora.md").read_text()
    )


def test_metrics_and_tables_per_method(evaluated: tuple[dict[str, Any], Path, Path], inputs: dict[str, Path]) -> None:
    _, out, _ = evaluated
    tables = out.parent / "tables"
    assert sorted(p.name for p in out.iterdir()) == ["ours", "sam_lora", "summary.json"], "JSON only"
    assert sorted(p.name for p in tables.iterdir()) == [
        "model_card_ours.md",
        "model_card_sam_lora.md",
        "ours_confusion.csv",
        "ours_per_patient.csv",
        "sam_lora_confusion.csv",
        "sam_lora_per_patient.csv",
        "summary.md",
    ]
    truth = truth_by_patient(inputs["data"])
    for method in ("ours", "sam_lora"):
        assert sorted(p.name for p in (out / method).iterdir()) == ["metrics.json"]
        text = (out / method / "metrics.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        metrics = json.loads(text)
        assert metrics["method"] == method and metrics["patients"] == 3 and metrics["slices"] == 9
        # P03 has no non-calcified plaque: ours (= truth) does not predict any, so it is excluded
        assert metrics["dice"]["non_calcified"]["excluded"] == (1 if method == "ours" else 0)
        table = pd.read_csv(tables / f"{method}_per_patient.csv")
        assert table["patient"].tolist() == list(TEST_PATIENTS)
        assert table["slices"].tolist() == [3, 4, 2]
        confusion = pd.read_csv(tables / f"{method}_confusion.csv", index_col=0)
        assert list(confusion.columns) == list(CLASS_NAMES) and list(confusion.index) == list(CLASS_NAMES)
        counts = confusion.to_numpy()
        assert counts.sum() == 9 * SIZE * SIZE
        labels = np.concatenate([lab for _, lab in truth.values()])
        assert counts.sum(axis=1).tolist() == np.bincount(labels.ravel(), minlength=NUM_CLASSES).tolist()
    ours = pd.read_csv(tables / "ours_per_patient.csv")
    assert ours["macro_dice"].tolist() == [1.0, 1.0, 1.0]
    assert (ours["true_total_plaque_mm3"] == ours["pred_total_plaque_mm3"]).all()
    assert (ours["true_total_plaque_mm3"] > 0).all()
    ours_counts = pd.read_csv(tables / "ours_confusion.csv", index_col=0).to_numpy()
    assert np.array_equal(ours_counts, np.diag(np.diag(ours_counts)))
    lora = pd.read_csv(tables / "sam_lora_per_patient.csv")
    assert (lora["macro_dice"] < 1.0).all()


def test_summary_markdown_and_figures(evaluated: tuple[dict[str, Any], Path, Path]) -> None:
    _, out, figs = evaluated
    markdown = (out.parent / "tables" / "summary.md").read_text()
    ours_row = next(line for line in markdown.splitlines() if line.startswith("| Ours |"))
    assert ours_row.count("**1.000** [1.000, 1.000]") == 5  # best in every column
    assert "| Ours | 1,234,567 | 2.5 min | 6 | vit_tiny (random) |" in markdown  # the runs table
    assert "cosine decay | non_calcified ≥ 4 mm³ |" in markdown
    assert "| SAM+LoRA | n/a | n/a | n/a | n/a (pretrained) | its own | none |" in markdown
    assert "| SAM+LoRA |" in markdown
    assert "**The SAM image encoder of Ours was randomly initialised**" in markdown
    names = sorted(p.name for p in figs.iterdir())
    assert names == sorted(f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf"))
    assert all((figs / n).stat().st_size > 1000 for n in names)
    assert (figs / "qualitative.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (figs / "qualitative.pdf").read_bytes()[:5] == b"%PDF-"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_input_names_method_and_patient_and_leaves_outputs_as_they_were(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    preds = tmp_path / "predictions"
    write_predictions(preds / "ours", inputs["data"])
    write_predictions(preds / "sam_lora", inputs["data"], degrade)
    (preds / "sam_lora" / "P02.npz").unlink()
    out, figs, tables = tmp_path / "out", tmp_path / "figures", tmp_path / "tables"
    (out / "ours").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    (out / "ours" / "metrics.json").write_text("{}")
    figs.mkdir()
    (figs / "qualitative.png").write_bytes(b"old figure")
    tables.mkdir()
    (tables / "summary.md").write_text("previous results\n")
    before_out, before_figs, before_tables = snapshot(out), snapshot(figs), snapshot(tables)
    with pytest.raises(InputError) as info:
        evaluate(preds, inputs["data"], out, figs, eval_cfg(), tables_dir=tables)
    assert "sam_lora" in str(info.value) and "P02" in str(info.value)
    assert info.value.where == str(preds / "sam_lora" / "P02.npz")
    assert snapshot(out) == before_out and snapshot(figs) == before_figs and snapshot(tables) == before_tables
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "out", "predictions", "tables"]  # no partial


def test_evaluate_one_method_folder_without_figures(inputs: dict[str, Path], tmp_path: Path) -> None:
    summ = evaluate(inputs["preds"] / "sam_lora", inputs["data"], tmp_path / "out", None, eval_cfg())
    assert list(summ["methods"]) == ["sam_lora"] and summ["ours_vs"] == {} and summ["backbone_weights"] == {}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sam_lora", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -------------------------------------------------------------------------------------- focus box


def boxes(*maps: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    ys, xs = focus_box(*maps, margin=margin)
    return ys.start, ys.stop, xs.start, xs.stop


def test_focus_box_is_a_square_around_the_foreground_with_margin() -> None:
    truth = np.zeros((2, 32, 32), np.uint8)
    truth[0, 10:13, 14:20] = 1  # rows 10..12, columns 14..19
    pred = np.zeros_like(truth)
    pred[1, 11, 21] = 3  # a predicted pixel outside the truth widens the box
    y0, y1, x0, x1 = boxes(truth, pred, margin=2)
    assert y1 - y0 == x1 - x0 == 8 + 2 * 2  # columns 14..21 span 8
    assert x0 == 14 - 2 and x1 == 22 + 2
    assert y0 <= 10 - 2 and y1 >= 13 + 2
    # foreground of any map lies inside
    ys, xs = focus_box(truth, pred, margin=2)
    for m in (truth, pred):
        assert m[:, ys, xs].astype(bool).sum() == m.astype(bool).sum()


def test_focus_box_stays_inside_the_slice() -> None:
    corner = np.zeros((1, 16, 16), np.uint8)
    corner[0, 0:2, 0:3] = 2
    assert boxes(corner, margin=4) == (0, 11, 0, 11)
    far = np.zeros((1, 16, 16), np.uint8)
    far[0, 14:16, 13:16] = 4
    assert boxes(far, margin=4) == (5, 16, 5, 16)
    spread = np.zeros((1, 16, 16), np.uint8)
    spread[0, 1, 1] = spread[0, 14, 14] = 1
    assert boxes(spread, margin=4) == (0, 16, 0, 16)
    assert boxes(np.zeros((1, 16, 16), np.uint8), margin=4) == (0, 16, 0, 16)


# ------------------------------------------------------------------------------------ command line


@pytest.fixture
def params(tmp_path: Path) -> Path:
    """The repository's params with fewer bootstrap resamples."""
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())
    raw["eval"]["bootstrap_resamples"] = RESAMPLES
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(inputs: dict[str, Path], params: Path, pred: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "--pred",
            str(pred),
            "--data",
            str(inputs["data"]),
            "--out",
            str(out),
            "--params",
            str(params),
            "--profile",
            "smoke",
            *extra,
        ]
    )


def test_cli_missing_predictions_folder(
    inputs: dict[str, Path], params: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(inputs, params, tmp_path / "nowhere", tmp_path / "out")
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {tmp_path / 'nowhere'}: predictions folder not found"]
    assert "macro Dice" not in captured.out and not (tmp_path / "out").exists()


def test_cli_prints_macro_dice(
    inputs: dict[str, Path], params: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = cli(inputs, params, inputs["preds"], out, "--tables", str(tmp_path / "tables"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "Ours: macro Dice 1.000 [1.000, 1.000]"
    assert lines[1].startswith("SAM+LoRA: macro Dice 0.") and len(lines) == 2
    assert json.loads((out / "summary.json").read_text())["bootstrap_resamples"] == RESAMPLES


def test_cli_takes_the_folder_plaque_predict_wrote(
    inputs: dict[str, Path], params: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pred OUT`` where OUT holds ``predictions/<method>/`` and ``processed/``, as ``python -m plaque.predict
    --out OUT`` leaves it: both are found without ``--data``."""
    folder = tmp_path / "new-cohort"
    shutil.copytree(inputs["preds"] / "ours", folder / "predictions" / "ours")
    shutil.copytree(inputs["data"], folder / "processed")
    code = main(["--pred", str(folder), "--out", str(tmp_path / "out"), "--params", str(params), "--profile", "smoke"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines() == ["Ours: macro Dice 1.000 [1.000, 1.000]"]
    shutil.rmtree(folder / "processed")
    assert main(["--pred", str(folder), "--out", str(tmp_path / "out2"), "--params", str(params)]) == 2
    assert "holds no processed/" in capsys.readouterr().err


def test_augmentation_in_words_names_each_part_that_is_on() -> None:
    on = {"rotation_p": 0.5, "rotation_max_deg": 15.0, "shift_mm": 0.5}
    assert describe_augmentation(on) == "random rotation (p 0.5, up to 15°), centre shift up to 0.5 mm"
    assert describe_augmentation({**on, "shift_mm": 0.0}) == "random rotation (p 0.5, up to 15°)"
    assert describe_augmentation({**on, "rotation_p": 0.0, "shift_mm": 0.0}) == "none"
