"""Stage-2 end to end on a tiny phantom cohort: metrics, checkpoints, frozen prior, test predictions, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from plaque.checkpoint import load_checkpoint, save_atomic
from plaque.config import load_config
from plaque.data.phantom import generate_cohort
from plaque.data.preprocess import preprocess
from plaque.data.processed import load_processed
from plaque.inference import load_predictor
from plaque.models.vq import build_vq
from plaque.train.distributed import DistInfo
from plaque.train.stage2 import main, train_stage2

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:stage2.backbone is vit_tiny")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(processed folder, Stage-1 best.pt) — the prior is an untrained but valid Stage-1 model."""
    cfg = load_config(profile="smoke")
    work = tmp_path_factory.mktemp("stage2")
    generate_cohort(work / "raw", 3, seed=7, cfg=cfg["phantom"], processes=1)
    preprocess(work / "raw", work / "processed", cfg["preprocess"], processes=1)
    torch.manual_seed(1)
    prior = work / "stage1" / "best.pt"
    save_atomic({"format": 1, "epoch": 1, "model": build_vq(cfg["stage1"]).state_dict()}, prior)
    return work / "processed", prior


def test_stage2_trains_and_predicts_the_test_split(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    processed, prior = cohort
    cfg = load_config(profile="smoke")
    models, results, preds = tmp_path / "models", tmp_path / "results", tmp_path / "preds"
    result = train_stage2(processed, prior, models, results, preds, cfg, DistInfo())
    assert result.epochs_run == cfg["train"]["max_epochs"]
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["method"] == "ours" and metrics["backbone"] == cfg["stage2"]["backbone"]
    assert metrics["backbone_weights"] == "random" and metrics["sam_tuning"] == cfg["stage2"]["sam_tuning"]
    assert metrics["decoder"] == cfg["stage2"]["decoder"] and metrics["monitor"] == "macro_dice"
    assert 0.0 <= metrics["macro_dice"] <= 1.0 and metrics["best_epoch"] == result.best_epoch
    assert set(metrics["dice"]) == {"vessel_wall", "lumen", "calcified", "non_calcified"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in metrics["dice"].values())
    assert metrics["epochs_run"] == result.epochs_run and metrics["world_size"] == 1
    assert metrics["effective_batch_size"] == cfg["train"]["batch_size_per_gpu"]
    assert np.isfinite(metrics["val_loss"])
    assert (models / "best.pt").is_file() and (results / "live").is_dir()

    # best.pt is self-contained: the inference layer predicts with it alone, as training predicted the test split
    record = load_checkpoint(models / "best.pt")
    assert record["method"] == "ours" and record["classes"][4] == "non_calcified"
    assert record["config"] == {k: cfg[k] for k in ("profile", "train", "augment", "stage2", "stage1")}
    assert record["preprocess"] == load_processed(processed).preprocess_settings()
    # the plaque floor was chosen on the validation split and is applied wherever best.pt predicts
    assert set(record["plaque_floor_mm3"]) == {"calcified", "non_calcified"}
    assert metrics["plaque_floor_mm3"] == record["plaque_floor_mm3"]
    assert set(record["plaque_floor_validation"]["calcified"]) == {"0", "0.5", "1", "2", "4", "8", "16"}
    predictor = load_predictor(models / "best.pt")

    # the prior is frozen: Stage-2's best checkpoint carries it bit for bit
    stage1 = load_checkpoint(prior)["model"]
    best = load_checkpoint(models / "best.pt")["model"]
    for key, value in stage1.items():
        assert torch.equal(best[f"prior.{key}"], value), key

    # one file per test patient, slices in manifest order, shapes of the stored slices, classes 0..4
    data = load_processed(processed)
    test = data.manifest[data.manifest["split"] == "test"]
    assert sorted(p.stem for p in preds.glob("*.npz")) == sorted(test["patient"].unique())
    assert not list(tmp_path.glob(".preds*")), "no temporary folder left behind"
    for patient, rows in test.groupby("patient"):
        with np.load(preds / f"{patient}.npz") as f:
            pred, index = f["pred"], f["index"]
        assert np.array_equal(index, rows["index"].to_numpy())
        assert pred.dtype == np.uint8 and pred.shape == (len(rows), *data.images.shape[1:])
        assert pred.max() <= 4
        spacing = float(np.median(rows["spacing_mm"]))  # each stack is predicted with its median spacing
        np.testing.assert_array_equal(predictor.predict(data.images[index], spacing), pred)


def test_cli_reports_a_bad_prior_in_one_line(
    cohort: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    processed, _ = cohort
    code = main(
        [
            "--method",
            "ours",
            "--data",
            str(processed),
            "--prior",
            str(tmp_path / "nowhere.pt"),
            "--out",
            str(tmp_path / "m"),
            "--results",
            str(tmp_path / "r"),
            "--predictions",
            str(tmp_path / "p"),
            "--profile",
            "smoke",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "nowhere.pt" in err and "\n" not in err
    assert not (tmp_path / "r" / "metrics.json").exists() and not (tmp_path / "p").exists()


def test_two_gloo_processes_under_torchrun(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    processed, prior = cohort
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "plaque.train.stage2",
        "--method",
        "ours",
        "--data",
        str(processed),
        "--prior",
        str(prior),
        "--out",
        str(tmp_path / "m"),
        "--results",
        str(tmp_path / "r"),
        "--predictions",
        str(tmp_path / "p"),
        "--profile",
        "smoke",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["effective_batch_size"] == 2 * load_config(profile="smoke")["train"]["batch_size_per_gpu"]
    assert (tmp_path / "m" / "best.pt").is_file() and list((tmp_path / "p").glob("*.npz"))


def test_training_never_reads_test_slices(
    cohort: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model selection sees train and validation rows only; the test split is read by prediction alone."""
    processed, prior = cohort
    test_rows = set(load_processed(processed).indices("test").tolist())
    seen: dict[str, set[int]] = {}

    def fake_fit(model, optimizer, train_set, val_set, step, validate, fit_cfg, info, rare, record):  # noqa: ANN001, ANN202
        seen["train"], seen["val"] = set(train_set.rows.tolist()), set(val_set.rows.tolist())
        assert len(rare) == len(train_set), "one plaque mark per training slice"
        raise RuntimeError("stop before training")

    monkeypatch.setattr("plaque.train.stage2.fit", fake_fit)
    with pytest.raises(RuntimeError, match="stop before training"):
        train_stage2(
            processed, prior, tmp_path / "m", tmp_path / "r", tmp_path / "p", load_config(profile="smoke"), DistInfo()
        )
    assert seen["train"] and seen["val"]
    assert not (seen["train"] | seen["val"]) & test_rows
