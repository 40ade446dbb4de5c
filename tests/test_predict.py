"""Predicting an unseen cohort: every patient a test patient, one npz per patient that the evaluator accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from plaque.config import load_config
from plaque.data.phantom import generate_cohort
from plaque.data.processed import load_processed
from plaque.errors import InputError
from plaque.eval.predictions import load_method
from plaque.predict import main, predict_cohort
from tests.checkpoints import untrained_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cfg() -> dict:
    """The smoke profile, with cross-sections 2.5 mm apart so the cohort has few slices to predict."""
    cfg = load_config(profile="smoke")
    cfg["preprocess"]["step_mm"] = 2.5
    return cfg


@pytest.fixture(scope="module")
def cohort(cfg: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A raw phantom cohort of two patients and untrained Stage-2 checkpoints of ``ours`` and ``no_prior``,
    in the trainer's format."""
    work = tmp_path_factory.mktemp("predict")
    generate_cohort(work / "raw", 2, seed=11, cfg=cfg["phantom"], processes=1)
    paths = {"raw": work / "raw"}
    settings = {
        "window_hu": cfg["preprocess"]["window_hu"],
        "crop_px": cfg["preprocess"]["crop_px"],
        "step_mm": cfg["preprocess"]["step_mm"],
        "size": cfg["preprocess"]["size"],
    }
    for method in ("ours", "no_prior"):
        paths[method] = untrained_checkpoint(cfg, method, settings, work / method / "best.pt")
    return paths


def test_predict_cohort_writes_processed_test_split_and_predictions(
    cfg: dict, cohort: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    patients = predict_cohort(cohort["raw"], out, "ours", cohort["ours"], cfg, CPU)
    processed = load_processed(out / "processed")
    manifest = processed.manifest
    assert set(manifest["split"]) == {"test"} and len(manifest) > 0
    assert processed.summary["step_mm"] == 2.5  # the given preprocessing settings were used
    assert patients == sorted(manifest["patient"].unique()) and len(patients) == 2
    folder = out / "predictions" / "ours"
    assert sorted(p.name for p in folder.iterdir()) == [f"{p}.npz" for p in patients]
    for patient in patients:
        rows = manifest.index[manifest["patient"] == patient].to_numpy()
        with np.load(folder / f"{patient}.npz") as f:
            pred, index = f["pred"], f["index"]
        assert pred.dtype == np.uint8 and pred.shape == (len(rows), *processed.images.shape[1:])
        assert np.array_equal(index, rows) and pred.max() < 5
    # what the evaluator reads, it accepts
    loaded = load_method(folder, "ours", processed)
    assert list(loaded) == patients


def test_missing_checkpoint_names_the_path(cfg: dict, cohort: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "models" / "best.pt"
    with pytest.raises(InputError) as info:
        predict_cohort(cohort["raw"], tmp_path / "out", "ours", missing, cfg, CPU)
    assert info.value.where == str(missing) and "ours" in info.value.problem
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_method_is_refused(cfg: dict, cohort: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        predict_cohort(cohort["raw"], tmp_path / "out", "ours", cohort["no_prior"], cfg, CPU)
    assert info.value.where == str(cohort["no_prior"]) and "no_prior model, not ours" in info.value.problem
    assert not (tmp_path / "out").exists()  # refused before anything is preprocessed


def test_cli_reports_a_missing_model_in_one_line(
    cohort: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.pt"
    code = main(
        [
            "--method",
            "ours",
            "--raw",
            str(cohort["raw"]),
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(missing),
            "--profile",
            "smoke",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {missing}: ")
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_profile_is_refused(cfg: dict, cohort: dict[str, Path], tmp_path: Path) -> None:
    demo = load_config(profile="demo")
    with pytest.raises(InputError) as info:
        predict_cohort(cohort["raw"], tmp_path / "out", "ours", cohort["ours"], demo, CPU)
    assert info.value.where == str(cohort["ours"]) and "trained with profile 'smoke'" in info.value.problem
    assert "--profile smoke" in info.value.problem
    assert not (tmp_path / "out").exists()
