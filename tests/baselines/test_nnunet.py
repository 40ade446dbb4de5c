"""The nnU-Net baseline on a tiny cohort: export that nnU-Net's own planner accepts, our split kept, the trainer
found by nnU-Net's lookup, and one end-to-end run whose predictions are nnU-Net's own."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from benchmarks.nnunet_loader import floors, measure
from plaque.baselines.nnunet import export
from plaque.baselines.nnunet.predictor import cpu_autocast
from plaque.baselines.nnunet.run import (
    CONFIGURATION,
    cap_batch_size,
    main,
    nnunet_env,
    plan_command,
    prepare_work,
    run_nnunet,
    run_tool,
    tool,
    write_curves,
)
from plaque.baselines.nnunet.settings import NNUNET_TRAINER, Settings, from_config
from plaque.baselines.nnunet.trainer import (
    SETTINGS_ENV,
    TRAINER_FOLDER,
    TRAINER_NAME,
    nnUNetTrainer_Plaque,
    read_settings,
    seeded_augmenters,
)
from plaque.checkpoint import load_checkpoint
from plaque.config import load_config
from plaque.data.processed import MANIFEST_FILE, load_processed
from plaque.errors import InputError
from plaque.eval.figures import read_dvclive_curve
from plaque.eval.predictions import load_method
from plaque.inference import load_predictor
from plaque.postprocess import PlaqueFloor, voxel_volume
from plaque.train.trainer import seed_everything
from tests.eval.factories import STEP_MM, write_processed

WINDOW = [-300.0, 1300.0]

# (patient, split, slices) in manifest order; P04 and P02 have two vessels each (see `cohort`).
LAYOUT = (
    ("P01", "train", 6),
    ("P02", "test", 5),
    ("P03", "val", 4),
    ("P04", "train", 7),
    ("P05", "test", 3),
    ("P06", "val", 4),
)
SPACING = {"P01": 0.40, "P02": 0.45, "P03": 0.42, "P04": 0.38, "P05": 0.44, "P06": 0.41}
TINY = {**load_config(profile="smoke")["nnunet"], "dataset_id": 977, "dataset_name": "PlaqueTest"}
CFG = {"profile": "smoke", "preprocess": {"window_hu": WINDOW, "step_mm": STEP_MM}, "nnunet": TINY}


def parse(section: dict) -> Settings:
    return from_config({"nnunet": section})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six patients (2 train, 2 val, 2 test); constant pixel spacing per patient; P04's last three slices are its
    RCA and P02's last two its "L CX", so some patients have two nnU-Net cases."""
    data = write_processed(tmp_path_factory.mktemp("nnunet-data") / "processed", LAYOUT)
    manifest = pd.read_csv(data / MANIFEST_FILE, dtype={"patient": str, "vessel": str})
    manifest["spacing_mm"] = manifest["patient"].map(SPACING)
    for patient, vessel, n in (("P04", "RCA", 3), ("P02", "L CX", 2)):
        rows = manifest.index[manifest["patient"] == patient][-n:]
        manifest.loc[rows, "vessel"] = vessel
    manifest.to_csv(data / MANIFEST_FILE, index=False)
    return data


@pytest.fixture(scope="module")
def planned(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The cohort exported and run through the real ``nnUNetv2_plan_and_preprocess``."""
    work = tmp_path_factory.mktemp("nnunet-work")
    settings = parse(TINY)
    processed = load_processed(cohort)
    raw = work / "nnUNet_raw" / settings.dataset
    pre = work / "nnUNet_preprocessed" / settings.dataset
    cases = export.export_dataset(processed, raw, WINDOW, STEP_MM)
    splits = export.splits_for(cases)
    export.write_splits(pre, splits)
    run_tool(
        "plan",
        plan_command(settings),
        nnunet_env(work, settings, "cpu"),
        work / "plan.log",
    )
    return {"work": work, "raw": raw, "pre": pre, "cases": cases, "splits": splits, "processed": processed}


def _ids(folder: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix)}


def test_export_puts_train_and_val_in_training_and_test_only_in_imagests(planned: dict) -> None:
    raw, cases = planned["raw"], planned["cases"]
    assert {c.case for c in cases} == {
        "P01_LAD",
        "P02_LAD",
        "P02_L-CX",
        "P03_LAD",
        "P04_LAD",
        "P04_RCA",
        "P05_LAD",
        "P06_LAD",
    }
    train_val = {c.case for c in cases if c.split in ("train", "val")}
    test = {c.case for c in cases if c.split == "test"}
    assert _ids(raw / "imagesTr", "_0000.nii.gz") == train_val == _ids(raw / "labelsTr", ".nii.gz")
    assert _ids(raw / "imagesTs", "_0000.nii.gz") == test == {"P02_LAD", "P02_L-CX", "P05_LAD"}
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == len(train_val) == 5
    assert meta["labels"] == {"background": 0, "vessel_wall": 1, "lumen": 2, "calcified": 3, "non_calcified": 4}
    assert meta["file_ending"] == ".nii.gz"


def test_nnunet_reads_each_case_as_the_slices_in_manifest_order_in_hu(planned: dict) -> None:
    processed = planned["processed"]
    for c in planned["cases"]:
        folder = "imagesTr" if c.split != "test" else "imagesTs"
        image, props = SimpleITKIO().read_images([str(planned["raw"] / folder / f"{c.case}_0000.nii.gz")])
        expected = np.asarray(processed.images[c.rows])
        assert image.shape == (1, *expected.shape)  # nnU-Net's (c, N, H, W): slices along its first axis
        assert image.min() >= WINDOW[0] and image.max() <= WINDOW[1]
        np.testing.assert_allclose(export.from_hu(image[0], WINDOW), expected, atol=1e-5)
        np.testing.assert_allclose(props["spacing"], [STEP_MM, SPACING[c.patient], SPACING[c.patient]], rtol=1e-5)
        if c.split != "test":
            seg, _ = SimpleITKIO().read_seg(str(planned["raw"] / "labelsTr" / f"{c.case}.nii.gz"))
            np.testing.assert_array_equal(seg[0], np.asarray(processed.labels[c.rows]))


def test_hu_conversion_round_trips() -> None:
    x = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    hu = export.to_hu(x, WINDOW)
    assert hu.dtype == np.float32 and hu[0] == -300.0 and hu[-1] == 1300.0
    np.testing.assert_allclose(export.from_hu(hu, WINDOW), x, atol=1e-6)


def test_planning_accepts_the_export_and_keeps_our_split(planned: dict) -> None:
    pre, splits = planned["pre"], planned["splits"]
    assert splits == [{"train": ["P01_LAD", "P04_LAD", "P04_RCA"], "val": ["P03_LAD", "P06_LAD"]}]
    export.check_splits(pre, splits)  # still there, fold 0 ours, after nnU-Net's planning and preprocessing
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["transpose_forward"] == [0, 1, 2]  # 2D images are our cross-sections
    preprocessed = {
        p.name.split(".")[0] for p in (pre / "nnUNetPlans_2d").iterdir() if not p.name.endswith("_seg.b2nd")
    }
    assert preprocessed == set(splits[0]["train"]) | set(splits[0]["val"])  # no test case seen by nnU-Net


def test_check_splits_refuses_a_missing_file_a_missing_fold_or_another_split(planned: dict, tmp_path: Path) -> None:
    splits = planned["splits"]
    with pytest.raises(InputError, match="missing"):
        export.check_splits(tmp_path, splits)
    (tmp_path / export.SPLITS_FILE).write_text("[]")
    with pytest.raises(InputError, match="no fold 0"):
        export.check_splits(tmp_path, splits)
    swapped = [{"train": splits[0]["val"], "val": splits[0]["train"]}]
    export.write_splits(tmp_path, swapped)
    with pytest.raises(InputError, match="not our patient-level split"):
        export.check_splits(tmp_path, splits)


def test_nnunet_finds_our_trainer_through_nnunet_exttrainer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    with pytest.raises(RuntimeError, match="Could not find"):
        recursive_find_trainer_class_by_name(TRAINER_NAME)
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINER_FOLDER))
    found = recursive_find_trainer_class_by_name(TRAINER_NAME)
    assert found.__name__ == TRAINER_NAME and issubclass(found, nnUNetTrainer)
    assert recursive_find_trainer_class_by_name(NNUNET_TRAINER) is nnUNetTrainer


def test_trainer_choice_and_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paper = from_config(load_config(profile="paper"))
    assert paper.trainer == NNUNET_TRAINER  # nnU-Net's own 1000 x 250 with TTA: the stock trainer
    assert parse({**paper.as_dict(), "tta": False}).trainer == TRAINER_NAME  # validates without mirroring
    assert parse(TINY).trainer == TRAINER_NAME
    path = tmp_path / "trainer_settings.json"
    path.write_text(json.dumps(parse(TINY).trainer_settings))
    monkeypatch.setenv(SETTINGS_ENV, str(path))
    good = {"epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "tta": False, "seed": 0}
    assert read_settings() == {**good, "precision": "auto"}
    good["precision"] = "fp32"
    for bad, message in (
        ({"precision": "bf32"}, "precision must be one of"),
        ({"precision": None}, "precision must be one of"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"tta": 1}, "tta must be true or false"),
        ({"seed": -1}, "seed must be an integer from 0 to"),
        ({"seed": 2**32}, "seed must be an integer from 0 to"),
        ({"seed": None}, "seed must be an integer from 0 to"),
    ):
        path.write_text(json.dumps({**good, **bad}))
        with pytest.raises(RuntimeError, match=message):
            read_settings()
    monkeypatch.delenv(SETTINGS_ENV)
    with pytest.raises(RuntimeError, match=SETTINGS_ENV):
        read_settings()


@pytest.mark.parametrize("tta", [False, True])
def test_final_validation_mirrors_only_with_tta(tta: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's own validation sees the mirror axes only with TTA; the trainer's axes are restored after."""
    seen: list[object] = []
    monkeypatch.setattr(
        nnUNetTrainer,
        "perform_actual_validation",
        lambda self, save=False: seen.append(self.inference_allowed_mirroring_axes),
    )
    trainer = object.__new__(nnUNetTrainer_Plaque)  # no plans needed for this method
    trainer.validation_mirroring, trainer.inference_allowed_mirroring_axes = tta, (0, 1)
    trainer.device, trainer.cpu_precision = torch.device("cpu"), "fp32"
    trainer.perform_actual_validation()
    assert seen == [(0, 1) if tta else None] and trainer.inference_allowed_mirroring_axes == (0, 1)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_steps_and_final_validation_run_under_the_cpu_precision(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU, nnU-Net's training step, validation step and final validation run under the settings'
    precision (nnU-Net itself never autocasts there); on a GPU the trainer adds no autocast of its own."""
    seen: list[tuple[str, bool, torch.dtype]] = []

    def record(name: str) -> Any:
        return lambda self, *args: seen.append(
            (name, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        )

    for name in ("train_step", "validation_step", "perform_actual_validation"):
        monkeypatch.setattr(nnUNetTrainer, name, record(name))
    trainer = object.__new__(nnUNetTrainer_Plaque)
    trainer.device, trainer.cpu_precision = torch.device("cpu"), precision
    trainer.validation_mirroring, trainer.inference_allowed_mirroring_axes = True, (0, 1)
    trainer.train_step({})
    trainer.validation_step({})
    trainer.perform_actual_validation()
    on = precision == "bf16"
    assert [(name, enabled) for name, enabled, _ in seen] == [
        ("train_step", on),
        ("validation_step", on),
        ("perform_actual_validation", on),
    ]
    assert all(dtype == torch.bfloat16 for _, enabled, dtype in seen if enabled)
    assert not torch.is_autocast_enabled("cpu")  # left as it was
    assert isinstance(cpu_autocast(torch.device("cuda"), "bf16"), contextlib.nullcontext)


def _plans(tmp_path: Path, batch_size: int) -> Path:
    path = tmp_path / "nnUNetPlans.json"
    other = {"batch_size": 2, "patch_size": [8, 8, 8]}
    path.write_text(json.dumps({"configurations": {CONFIGURATION: {"batch_size": batch_size}, "3d_fullres": other}}))
    return path


def test_batch_size_caps_the_2d_plans_and_auto_leaves_them_as_planned(tmp_path: Path) -> None:
    path = _plans(tmp_path, 243)
    assert cap_batch_size(path, "auto") == (243, 243)
    assert json.loads(path.read_text())["configurations"][CONFIGURATION]["batch_size"] == 243
    assert cap_batch_size(path, 16) == (243, 16)
    plans = json.loads(path.read_text())["configurations"]
    assert plans[CONFIGURATION]["batch_size"] == 16 and plans["3d_fullres"]["batch_size"] == 2
    path = _plans(tmp_path, 12)
    assert cap_batch_size(path, 32) == (12, 12)  # a cap above the planned batch changes nothing
    assert json.loads(path.read_text())["configurations"][CONFIGURATION]["batch_size"] == 12


def test_batch_size_is_a_setting_and_bad_caps_or_plans_are_one_line_errors(tmp_path: Path) -> None:
    assert parse(TINY).batch_size == "auto" and parse({**TINY, "batch_size": 16}).batch_size == 16
    assert parse({**TINY, "batch_size": 16}).as_dict()["batch_size"] == 16
    path = _plans(tmp_path, 243)
    for bad in (0, "all", True):
        with pytest.raises(InputError, match=r"nnunet\.batch_size: must be auto or a positive integer"):
            cap_batch_size(path, bad)
    path.write_text(json.dumps({"configurations": {"3d_fullres": {"batch_size": 2}}}))
    with pytest.raises(InputError, match="no batch_size in the '2d' configuration"):
        cap_batch_size(path, 16)


def test_curves_hold_per_class_pseudo_dice_and_images_seen(tmp_path: Path) -> None:
    logged = {
        "mean_fg_dice": [0.25, 0.5],
        "ema_fg_dice": [0.25, 0.275],
        "dice_per_class_or_region": [[0.4, 0.6, 0.0, 0.0], [0.7, 0.8, 0.3, float("nan")]],
        "train_losses": [1.0, 0.5],
        "val_losses": [0.9, 0.6],
        "lrs": [0.01, 0.005],
    }
    write_curves(tmp_path / "live", logged, images_per_epoch=12 * 16)
    images = read_dvclive_curve(tmp_path / "live", "images")
    assert list(images["step"]) == [1, 2] and list(images["images"]) == [192, 384] and images["images"].dtype == int
    expected = {"vessel_wall": [0.4, 0.7], "lumen": [0.6, 0.8], "calcified": [0.0, 0.3]}
    for name, values in expected.items():
        curve = read_dvclive_curve(tmp_path / "live", f"val/dice_{name}")
        assert list(curve["step"]) == [1, 2] and list(curve[f"dice_{name}"]) == values
    assert read_dvclive_curve(tmp_path / "live", "val/dice_non_calcified")["dice_non_calcified"].isna().tolist() == [
        False,
        True,
    ]
    with pytest.raises(InputError, match="epoch 1 has 3 values, expected 4"):
        write_curves(tmp_path / "bad", {**logged, "dice_per_class_or_region": [[0.1, 0.2, 0.3]]}, 1)
    assert not (tmp_path / "bad").exists()


def test_a_dataset_name_nnunet_cannot_use_names_the_key() -> None:
    with pytest.raises(InputError, match="nnunet.dataset_name"):
        parse({**TINY, "dataset_name": "a b"})


def test_stacks_with_varying_spacing_or_a_missing_split_are_refused(cohort: Path, tmp_path: Path) -> None:
    data = write_processed(tmp_path / "varying", LAYOUT)  # the factory varies the spacing slice by slice
    with pytest.raises(InputError, match="pixel spacing varies within the stack"):
        export.cases_of(load_processed(data))
    data = write_processed(tmp_path / "noval", (("P01", "train", 2), ("P02", "test", 2)))
    manifest = pd.read_csv(data / MANIFEST_FILE)
    manifest["spacing_mm"] = 0.4
    manifest.to_csv(data / MANIFEST_FILE, index=False)
    with pytest.raises(InputError, match="no patient in split 'val'"):
        export.cases_of(load_processed(data))


def test_work_folder_is_only_wiped_when_it_is_ours(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="not empty and was not made by this command"):
        prepare_work(foreign)
    assert (foreign / "thesis.tex").is_file()
    ours = tmp_path / "ours"
    prepare_work(ours)
    (ours / "stale").write_text("x")
    prepare_work(ours)
    assert not (ours / "stale").exists()


def test_nnunet_commands_run_where_their_scripts_are_not_beside_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an interpreter whose folder holds no nnU-Net scripts, as where wheels are unpacked onto PYTHONPATH
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    argv = tool("nnUNetv2_train")
    assert argv[0] == str(python)
    done = subprocess.run([*argv, "-h"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: nnUNetv2_train"), done.stderr[-2000:]
    with pytest.raises(InputError, match="nnUNetv2_nope: not found; install nnunetv2"):
        tool("nnUNetv2_nope")


def test_a_failing_nnunet_step_names_the_step_and_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('planner says no'); sys.exit(3)"]
    with pytest.raises(
        InputError,
        match=r"plan\.log: plan and preprocess failed \(exit status 3\); last lines: "
        r"planner says no",
    ):
        run_tool("plan and preprocess", argv, dict(os.environ), tmp_path / "logs" / "plan.log")
    assert (tmp_path / "logs" / "plan.log").read_text() == "planner says no\n"


def test_cli_prints_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "w"),
            "--predictions",
            str(tmp_path / "p"),
            "--results",
            str(tmp_path / "r"),
            "--profile",
            "smoke",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "missing" in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()


def test_end_to_end_tiny_run(cohort: Path, tmp_path: Path) -> None:
    """Train 1 epoch x 2 iterations at a batch capped to 1 and predict through the inference layer: the evaluator
    accepts the predictions and the curves; they are what nnU-Net's own ``nnUNetv2_predict`` makes of the
    exported test cases in float32 (``nnunet.precision: fp32``: nnU-Net's own command line never autocasts on
    the CPU); the self-contained ``best.pt`` alone predicts them again."""
    section = {**TINY, "batch_size": 1, "precision": "fp32"}
    settings = parse(section)
    environ = dict(os.environ)
    metrics = run_nnunet(
        cohort,
        tmp_path / "work",
        tmp_path / "pred" / "nnunet",
        tmp_path / "results",
        {**CFG, "nnunet": section},
        settings,
        "cpu",
    )
    processed = load_processed(cohort)
    preds = load_method(tmp_path / "pred" / "nnunet", "nnunet", processed)
    assert sorted(preds) == ["P02", "P05"]
    saved = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["method"] == "nnunet" and saved["trainer"] == TRAINER_NAME and saved["epochs_run"] == 1
    assert saved["backbone_weights"] == "none" and saved["trainable_parameters"] > 0
    assert saved["backbone"] == "nnU-Net 2d PlainConvUNet"
    assert saved["iterations_per_epoch"] == 2 and saved["predicted_with"] == "checkpoint_best.pth"
    assert saved["best_ema_pseudo_dice"] is not None and saved["final_validation_dice"] is not None
    assert saved["plan"]["transpose_forward"] == [0, 1, 2] and saved["plan"]["patch_size"] == [16, 16]
    assert saved["plan"]["planned_batch_size"] >= 2 and saved["plan"]["batch_size"] == 1  # capped before training
    assert "'batch_size': 1," in (tmp_path / "work" / "logs" / "train.log").read_text()
    assert "; precision fp32" in (tmp_path / "work" / "logs" / "train.log").read_text()
    live = tmp_path / "results" / "live"
    assert list(read_dvclive_curve(live, "val/macro_dice")["step"]) == [1]
    assert list(read_dvclive_curve(live, "images")["images"]) == [2 * 1]
    assert len(read_dvclive_curve(live, "val/dice_non_calcified")) == 1
    assert (tmp_path / "work" / "logs" / "train.log").stat().st_size > 0
    assert dict(os.environ) == environ  # nnU-Net's variables went to its processes only

    work = tmp_path / "work"
    argv = [
        *tool("nnUNetv2_predict"),
        "-i",
        str(work / "nnUNet_raw" / settings.dataset / "imagesTs"),
        "-o",
        str(tmp_path / "cli"),
        "-d",
        str(settings.dataset_id),
        "-c",
        CONFIGURATION,
        "-f",
        "0",
        "-tr",
        settings.trainer,
        "-chk",
        settings.checkpoint_file,
        "-device",
        "cpu",
        "--disable_progress_bar",
        "-npp",
        "1",
        "-nps",
        "1",
    ] + ([] if settings.tta else ["--disable_tta"])
    run_tool("predict", argv, nnunet_env(work, settings, "cpu"), tmp_path / "predict.log")
    cases = export.cases_of(processed)
    predictor = load_predictor(work / "best.pt")
    assert predictor.method == "nnunet" and predictor.preprocess["window_hu"] == WINDOW
    # ours = nnU-Net's own prediction with the plaque floor chosen on the validation cases
    floor = PlaqueFloor.from_record(load_checkpoint(work / "best.pt")["plaque_floor_mm3"])
    assert saved["plaque_floor_mm3"] == floor.as_record()
    for c in (c for c in cases if c.split == "test"):
        cli = floor.apply(export.read_stack(tmp_path / "cli" / f"{c.case}.nii.gz"), voxel_volume(c.spacing_mm, STEP_MM))
        rows = processed.manifest.index[processed.manifest["patient"] == c.patient].to_numpy()
        ours = preds[c.patient][np.searchsorted(rows, c.rows)]
        np.testing.assert_array_equal(ours, cli)
        np.testing.assert_array_equal(predictor.predict(processed.images[c.rows], c.spacing_mm), cli)


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, by its path in the nested record."""
    found: dict[str, torch.Tensor] = {}

    def walk(value: object, where: str) -> None:
        if isinstance(value, torch.Tensor):
            found[where] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}/{k}")

    walk(load_checkpoint(checkpoint), "")
    return found


def test_one_seed_gives_equal_weights_and_another_seed_other_weights(cohort: Path, tmp_path: Path) -> None:
    """nnU-Net seeds nothing itself; our trainer seeds its initialisation and its augmentation worker, so one
    seed gives equal weights and another seed other weights."""
    runs = []
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        work = tmp_path / name
        settings = parse({**TINY, "batch_size": 2, "seed": seed})
        run_nnunet(cohort, work / "work", work / "pred" / "nnunet", work / "results", CFG, settings, "cpu")
        runs.append(_weights(work / "work" / "best.pt"))
    first, again, other = runs
    assert first.keys() == again.keys() == other.keys() and len(first) > 10
    for key, value in first.items():
        assert torch.equal(value, again[key]), key
    assert not all(torch.equal(value, other[key]) for key, value in first.items()), "the seed reaches the weights"


def test_the_seed_reaches_every_generator_and_every_augmentation_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    seed_everything(7)
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    seed_everything(7)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first
    made: list[list[int]] = []

    class Recorder:
        def __init__(self, *args: object, num_processes: int, seeds: list[int] | None, **kwargs: object) -> None:
            made.append(seeds)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_module, "NonDetMultiThreadedAugmenter", Recorder)
    stock = trainer_module.NonDetMultiThreadedAugmenter
    monkeypatch.setattr("plaque.baselines.nnunet.trainer.NonDetMultiThreadedAugmenter", Recorder)
    with seeded_augmenters(5):
        trainer_module.NonDetMultiThreadedAugmenter(None, None, num_processes=2, seeds=None)  # nnU-Net's call
        trainer_module.NonDetMultiThreadedAugmenter(None, None, num_processes=1, seeds=None)
    assert made == [[5, 6], [1005]], "distinct seeds per loader and worker, derived from the one seed"
    assert trainer_module.NonDetMultiThreadedAugmenter is stock, "nnU-Net's own class is back after the block"


def test_loader_benchmark_times_our_trainers_batches_and_writes_nothing_into_the_stage(planned: dict) -> None:
    work = planned["work"]
    before = sorted((p.relative_to(work), p.stat().st_mtime_ns) for p in work.rglob("*"))
    figures = measure(work, parse(TINY), batches=2, warmup=1)
    plan = json.loads((planned["pre"] / "nnUNetPlans.json").read_text())["configurations"][CONFIGURATION]
    assert figures["batch_shape"] == [plan["batch_size"], 1, *plan["patch_size"]]
    assert figures["seconds_per_batch"] > 0
    assert sorted((p.relative_to(work), p.stat().st_mtime_ns) for p in work.rglob("*")) == before


def test_loader_floor_is_the_training_batches_over_the_workers(tmp_path: Path) -> None:
    settings = parse({**TINY, "epochs": 10, "iterations_per_epoch": 30, "val_iterations_per_epoch": 5})
    rows = floors(0.04, settings)
    assert [r["workers"] for r in rows] == [1, 2, 4, 8, 12, 16]
    assert rows[0]["floor_s"] == pytest.approx(12.0) and rows[2]["floor_s"] == pytest.approx(3.0)
    with pytest.raises(SystemExit, match="no nnUNet_preprocessed folder"):
        measure(tmp_path, settings, batches=1, warmup=0)
