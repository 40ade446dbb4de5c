"""Run the nnU-Net v2 baseline end to end: export, plan and preprocess, train, predict, convert, record.

    python -m plaque.baselines.nnunet --data data/processed --out WORK --predictions results/predictions/nnunet \\
        --results results/stage2/nnunet [--params FILE] [--profile NAME] [--device cpu|cuda|auto]

Data flow (every nnU-Net step is nnU-Net's own command-line tool, from this Python environment):

1. export: ``DATA`` -> ``WORK/nnUNet_raw/DatasetXXX_<name>/`` (`plaque.baselines.nnunet.export`): one case per
   (patient, vessel), HU within the preprocessing window, train + val patients in ``imagesTr``/``labelsTr``,
   test patients in ``imagesTs`` only; ``splits_final.json`` (one fold: our train / val patients) in
   ``WORK/nnUNet_preprocessed/DatasetXXX_<name>/``.
2. ``nnUNetv2_plan_and_preprocess -d ID -c 2d --verify_dataset_integrity``; then fold 0 of
   ``splits_final.json`` must still be ours (nnU-Net falls back to a random split for a missing fold). With
   ``nnunet.batch_size`` a number N, the 2D configuration's ``batch_size`` in ``nnUNetPlans.json`` becomes
   min(planned, N), as a user would edit the plans (`cap_batch_size`).
3. ``nnUNetv2_train ID 2d 0 -tr TRAINER -device D``, TRAINER = ``nnUNetTrainer`` for nnU-Net's own schedule
   (1000 x 250) with TTA, else ``nnUNetTrainer_Plaque`` (`plaque.baselines.nnunet.trainer`); includes nnU-Net's final
   validation of the val cases (``validation/summary.json``). The log must report our split's case counts.
4. ``WORK/best.pt``: the model, self-contained (`plaque.baselines.nnunet.predictor.nnunet_record`): nnU-Net's plans,
   ``dataset.json`` and the network weights of ``checkpoint_best.pth`` (the best EMA pseudo-Dice on validation,
   like our methods' ``best.pt``; ``nnunet.checkpoint: final`` for nnU-Net's default).
5. The plaque floor chosen on the validation patients and stored in ``WORK/best.pt``
   (`plaque.inference.fit_plaque_floor`), then ``PREDICTIONS/<patient>.npz`` of the test patients, predicted
   from that record by nnU-Net's own predictor through the inference layer (`plaque.inference.predict_split`),
   as every method predicts.
6. ``RESULTS/metrics.json`` and DVCLive-style curves under ``RESULTS/live/plots/metrics/`` (``val/macro_dice`` and
   ``val/dice_<class>`` are nnU-Net's per-epoch pseudo-Dice on validation patches, not our evaluator's Dice;
   ``images`` counts the training images seen, as the Stage-2 methods log it).

Environment of the nnU-Net processes (the user's own nnU-Net folders are never read or written; this
process's environment is left as it is): ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results`` =
``WORK/nnUNet_*``; ``nnUNet_extTrainer`` = the folder that holds our trainer; ``PLAQUE_NNUNET_SETTINGS`` =
``WORK/trainer_settings.json``; with ``nnunet.processes`` a number: ``nnUNet_n_proc_DA`` and ``nnUNet_def_n_proc`` = it
(and ``-np``/``-npfp``/``-npp``/``-nps``), with ``auto`` nnU-Net's defaults (or the user's values of those two
variables); on the CPU ``nnUNet_compile=f``; ``nnUNet_wandb_enabled=0``.

Reruns: ``WORK`` is scratch, rebuilt from nothing on every run (nnU-Net's training has no resume here); it
must be empty, missing, or a folder this command made (it holds ``.plaque-nnunet``). Each step's output goes
to ``WORK/logs/<step>.log``, and stays there after a failure. ``PREDICTIONS`` and ``RESULTS/live`` are replaced
atomically, and ``RESULTS/metrics.json`` is written last, only when everything before succeeded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from plaque.atomic import atomic_folder, write_json_atomic
from plaque.baselines.nnunet import export
from plaque.baselines.nnunet.predictor import NnunetPredictor, nnunet_record
from plaque.baselines.nnunet.settings import NNUNET_TRAINER, Settings, from_config
from plaque.baselines.nnunet.trainer import SETTINGS_ENV, TRAINER_FOLDER
from plaque.checkpoint import save_atomic
from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.cli import add_config_options, add_device_option, resolve_device, run_cli
from plaque.config import load_config
from plaque.data.processed import Processed, load_processed
from plaque.errors import InputError
from plaque.inference import fit_plaque_floor, predict_split
from plaque.methods import method_config

log = logging.getLogger("plaque.baselines.nnunet")

METHOD = "nnunet"
CONFIGURATION = "2d"
FOLD = 0
MARKER = ".plaque-nnunet"
BEST = "best.pt"
SETTINGS_FILE = "trainer_settings.json"
# nnU-Net output lines worth showing in our log (all of it goes to WORK/logs/<step>.log).
_SHOWN = re.compile(
    r"(: (Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time|Yayy|Mean Validation Dice|This split)"
    r"|^(Fingerprint extraction|Experiment planning|Preprocessing)\.\.\.|Traceback|Error)"
)
_SPLIT_LINE = re.compile(r"This split has (\d+) training and (\d+) validation cases")
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+): (.*)$")
_FOLDER_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")


# --------------------------------------------------------------------------------------------- environment
def nnunet_env(work: Path, settings: Settings, device: str) -> dict[str, str]:
    """The environment of every nnU-Net process (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in _FOLDER_VARS}  # never the user's own nnU-Net folders
    env.update(
        {
            "nnUNet_raw": str(work / "nnUNet_raw"),
            "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
            "nnUNet_results": str(work / "nnUNet_results"),
            "nnUNet_extTrainer": str(TRAINER_FOLDER),
            SETTINGS_ENV: str(work / SETTINGS_FILE),
            "nnUNet_wandb_enabled": "0",
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",  # stream nnU-Net's prints into the log as they come
        }
    )
    if settings.processes != "auto":
        env["nnUNet_n_proc_DA"] = env["nnUNet_def_n_proc"] = str(settings.processes)
    if device == "cpu":
        env["nnUNet_compile"] = "f"
    return env


def tool(name: str) -> list[str]:
    """The command that runs nnU-Net's console script ``name`` with this Python: its entry point called by
    ``sys.executable``, wherever nnunetv2 is importable from (a virtual environment, or a folder on
    ``PYTHONPATH`` whose scripts are not beside the interpreter).

    Raises:
        InputError: no installed package declares the script.
    """
    found = entry_points(group="console_scripts", name=name)
    if not found:
        raise InputError(name, "not found; install nnunetv2 into this environment (pip install nnunetv2)")
    entry = next(iter(found))
    call = f"import sys; from {entry.module} import {entry.attr.split('.')[0]}; sys.argv[0] = {name!r}"
    return [sys.executable, "-c", f"{call}; sys.exit({entry.attr}())"]


def run_tool(step: str, argv: Sequence[str], env: dict[str, str], log_file: Path) -> str:
    """Run one nnU-Net command, its output streamed to ``log_file`` (selected lines to our log); returns the output.

    Raises:
        InputError: the command failed; the message names the step, the log file and its last lines.
    """
    log.info("%s: %s", step, shlex.join(argv))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    t0 = time.perf_counter()
    with (
        open(log_file, "w") as f,
        subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            f.flush()
            lines.append(line.rstrip("\n"))
            if _SHOWN.search(line):
                log.info("  nnU-Net | %s", line.strip())
    if proc.returncode != 0:
        tail = " | ".join(s.strip()[:200] for s in lines[-6:] if s.strip())
        raise InputError(log_file, f"{step} failed (exit status {proc.returncode}); last lines: {tail}")
    log.info("%s done in %.1f s", step, time.perf_counter() - t0)
    return "\n".join(lines)


def prepare_work(work: Path) -> None:
    """Empty ``work`` (creating it) if it is missing, empty, or made by this command; refuse anything else."""
    work = Path(work)
    if work.exists():
        if not work.is_dir():
            raise InputError(work, "--out exists and is not a folder")
        if any(work.iterdir()) and not (work / MARKER).is_file():
            raise InputError(
                work, f"--out is not empty and was not made by this command (no {MARKER}); pass a new or empty folder"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("scratch folder of python -m plaque.baselines.nnunet; rebuilt on every run\n")


# ---------------------------------------------------------------------------------------------- read back
def load_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint with ``torch.load(weights_only=True)``: numpy scalars and dtypes (its logged
    values) are the only non-tensor types allowed."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover (numpy 1.x)
        from numpy.core.multiarray import scalar
    allowed = [scalar, np.dtype, *{type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int64)}]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "nnU-Net wrote no such checkpoint") from None
    except pickle.UnpicklingError as e:
        raise InputError(
            path, f"holds types beyond tensors and numpy scalars; not loaded ({str(e).splitlines()[0]})"
        ) from None


def cap_batch_size(plans_file: Path, cap: int | str) -> tuple[int, int]:
    """Cap the 2D configuration's batch in nnU-Net's ``plans_file`` to ``cap`` (``"auto"``: left as planned);
    returns the planned and the used batch size. The file is rewritten only when the batch changes.

    Raises:
        InputError: the plans have no 2D configuration with a batch size, or ``cap`` is neither ``auto`` nor a
            positive integer.
    """
    if cap != "auto" and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise InputError("nnunet.batch_size", f"must be auto or a positive integer, got {cap!r}")
    plans = json.loads(Path(plans_file).read_text())
    planned = plans.get("configurations", {}).get(CONFIGURATION, {}).get("batch_size")
    if isinstance(planned, bool) or not isinstance(planned, int):
        raise InputError(plans_file, f"no batch_size in the {CONFIGURATION!r} configuration")
    used = planned if cap == "auto" else min(planned, cap)
    if used != planned:
        plans["configurations"][CONFIGURATION]["batch_size"] = used
        Path(plans_file).write_text(json.dumps(plans, indent=4))
    return planned, used


def plan_summary(plans: dict[str, Any], planned_batch_size: int) -> dict[str, Any]:
    """What nnU-Net planned for the 2D configuration; ``batch_size`` is the one used (after `cap_batch_size`)."""
    c = plans["configurations"][CONFIGURATION]
    arch = c["architecture"]["arch_kwargs"]
    return {
        "patch_size": c["patch_size"],
        "planned_batch_size": planned_batch_size,
        "batch_size": c["batch_size"],
        "spacing_mm": c["spacing"],
        "network": c["architecture"]["network_class_name"].rsplit(".", 1)[-1],
        "stages": arch["n_stages"],
        "features_per_stage": arch["features_per_stage"],
        "normalization": c["normalization_schemes"],
        "transpose_forward": plans["transpose_forward"],
    }


def count_parameters(plans: dict[str, Any], dataset: dict[str, Any]) -> int:
    """Trainable parameters of the network nnU-Net builds from ``plans`` (its architecture, our five classes)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    config = manager.get_configuration(CONFIGURATION)
    heads = manager.get_label_manager(dataset).num_segmentation_heads
    net = nnUNetTrainer.build_network_architecture(
        manager, config, len(dataset["channel_names"]), heads, enable_deep_supervision=True
    )
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


def class_dice_curves(per_epoch: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """``val/dice_<class>`` curves of the foreground classes from nnU-Net's ``dice_per_class_or_region`` (one
    row per epoch, the foreground labels 1..4 in order).

    Raises:
        InputError: a row does not hold one value per foreground class.
    """
    for epoch, row in enumerate(per_epoch, 1):
        if len(row) != len(FOREGROUND):
            raise InputError(
                "dice_per_class_or_region", f"epoch {epoch} has {len(row)} values, expected {len(FOREGROUND)}"
            )
    return {f"val/dice_{CLASS_NAMES[c]}": [float(row[i]) for row in per_epoch] for i, c in enumerate(FOREGROUND)}


def write_curves(live: Path, logging_: dict[str, list], images_per_epoch: int) -> None:
    """nnU-Net's per-epoch log as DVCLive-style ``plots/metrics/<name>.tsv`` files (``step`` = epoch, from 1),
    with ``images`` = training images seen by the end of each epoch (``images_per_epoch`` = iterations per
    epoch x batch size); ``live`` is replaced atomically."""
    epochs = len(logging_.get("train_losses", []))
    curves: dict[str, list[float] | list[int]] = {
        "val/macro_dice": _floats(logging_.get("mean_fg_dice", [])),  # nnU-Net's pseudo Dice on validation patches
        "val/ema_macro_dice": _floats(logging_.get("ema_fg_dice", [])),  # its moving average (picks checkpoint_best)
        **class_dice_curves(logging_.get("dice_per_class_or_region", [])),
        "val/loss": _floats(logging_.get("val_losses", [])),
        "train/loss": _floats(logging_.get("train_losses", [])),
        "lr": _floats(logging_.get("lrs", [])),
        "images": [epoch * images_per_epoch for epoch in range(1, epochs + 1)],
    }
    with atomic_folder(live) as tmp:
        for name, values in curves.items():
            path = tmp / "plots" / "metrics" / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            column = name.rsplit("/", 1)[-1]
            pd.DataFrame({"step": np.arange(1, len(values) + 1), column: values}).to_csv(path, sep="\t", index=False)


def _split_counts_from_log(output: str) -> tuple[int, int] | None:
    match = _SPLIT_LINE.search(output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def final_validation_seconds(train_log: str) -> float | None:
    """Seconds nnU-Net's end-of-training validation took, from its log's time stamps ("Training done." to
    "Validation complete")."""
    stamps: dict[str, datetime] = {}
    for line in train_log.splitlines():
        match = _STAMP.match(line.strip())
        if match:
            for marker in ("Training done.", "Validation complete"):
                if match.group(2).startswith(marker) and marker not in stamps:
                    stamps[marker] = datetime.fromisoformat(match.group(1))
    if len(stamps) < 2:
        return None
    return round((stamps["Validation complete"] - stamps["Training done."]).total_seconds(), 1)


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values]


def _float(v: Any) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


# ------------------------------------------------------------------------------------------------- the run
def plan_command(settings: Settings) -> list[str]:
    """``nnUNetv2_plan_and_preprocess`` for the settings' dataset (2D configuration, integrity check), with
    their worker count for fingerprinting and preprocessing unless it is ``auto``."""
    argv = [
        *tool("nnUNetv2_plan_and_preprocess"),
        "-d",
        str(settings.dataset_id),
        "-c",
        CONFIGURATION,
        "--verify_dataset_integrity",
        "--no_pbar",
    ]
    if settings.processes != "auto":
        argv += ["-np", str(settings.processes), "-npfp", str(settings.processes)]
    return argv


def run_nnunet(
    data: Path,
    work: Path,
    predictions: Path,
    results: Path,
    cfg: dict[str, Any],
    settings: Settings,
    device: str = "cpu",
) -> dict[str, Any]:
    """The whole baseline (module docstring); returns the metrics written to ``results/metrics.json``."""
    t_start = time.perf_counter()
    processed = load_processed(data)
    window_hu, step_mm = _geometry(processed, cfg)
    prepare_work(work)
    work = Path(work).resolve()
    env = nnunet_env(work, settings, device)
    logs = work / "logs"
    raw = work / "nnUNet_raw" / settings.dataset
    pre = work / "nnUNet_preprocessed" / settings.dataset
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    cases = export.export_dataset(processed, raw, window_hu, step_mm)
    splits = export.splits_for(cases)
    export.write_splits(pre, splits)
    timings["export_seconds"] = time.perf_counter() - t0
    log.info(
        "export: %s cases (%s) into %s in %.1f s",
        len(cases),
        export.split_counts(cases),
        raw,
        timings["export_seconds"],
    )

    t0 = time.perf_counter()
    run_tool("plan and preprocess", plan_command(settings), env, logs / "plan_and_preprocess.log")
    export.check_splits(pre, splits, FOLD)
    planned_batch, _ = cap_batch_size(pre / "nnUNetPlans.json", settings.batch_size)
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    summary = plan_summary(plans, planned_batch)
    if summary["transpose_forward"][0] != 0:
        log.warning(
            "nnU-Net's planner slices the stacks along axis %d, not along the centerline (the in-plane "
            "spacing exceeds step_mm): its 2D images are not our cross-sections",
            summary["transpose_forward"][0],
        )
    timings["plan_seconds"] = time.perf_counter() - t0
    log.info(
        "plan: patch %s, batch %s (planned %s), %s stages",
        summary["patch_size"],
        summary["batch_size"],
        summary["planned_batch_size"],
        summary["stages"],
    )

    t0 = time.perf_counter()
    (work / SETTINGS_FILE).write_text(json.dumps(settings.trainer_settings, indent=2))
    if settings.trainer == NNUNET_TRAINER:
        log.warning("nnU-Net's stock trainer seeds nothing: nnunet.seed is not used and two runs differ")
    output = run_tool(
        "train",
        [
            *tool("nnUNetv2_train"),
            str(settings.dataset_id),
            CONFIGURATION,
            str(FOLD),
            "-tr",
            settings.trainer,
            "-device",
            device,
        ],
        env,
        logs / "train.log",
    )
    want = (len(splits[FOLD]["train"]), len(splits[FOLD]["val"]))
    if _split_counts_from_log(output) != want:
        raise InputError(
            logs / "train.log",
            f"nnU-Net did not train on our split ({want[0]} training and {want[1]} validation cases)",
        )
    timings["train_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = work / "nnUNet_results" / settings.dataset / f"{settings.trainer}__nnUNetPlans__{CONFIGURATION}"
    record = nnunet_record(
        method_config(cfg, METHOD),
        processed.preprocess_settings(),
        load_nnunet_checkpoint(out / f"fold_{FOLD}" / settings.checkpoint_file),
        plans,
        json.loads((out / "dataset.json").read_text()),
        CONFIGURATION,
        settings.tta,
        settings.precision,
    )
    save_atomic(record, work / BEST)
    predictor = fit_plaque_floor(NnunetPredictor(record, torch.device(device)), processed, work / BEST)
    patients = predict_split(predictor, processed, "test", predictions)
    timings["predict_seconds"] = time.perf_counter() - t0
    log.info("predictions of %d test patient(s) in %s; the model in %s", len(patients), predictions, work / BEST)

    metrics = collect_metrics(work, settings, device, plans, summary, timings, results)
    metrics["plaque_floor_mm3"] = predictor.floor.as_record()
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json_atomic(Path(results) / "metrics.json", metrics)
    log.info(
        "nnunet done in %.0f s: best EMA pseudo-Dice %s, final validation Dice %s",
        metrics["total_seconds"],
        metrics["best_ema_pseudo_dice"],
        metrics["final_validation_dice"],
    )
    return metrics


def collect_metrics(
    work: Path,
    settings: Settings,
    device: str,
    plans: dict[str, Any],
    summary: dict[str, Any],
    timings: dict[str, float],
    results: Path,
) -> dict[str, Any]:
    """metrics.json's content, from nnU-Net's final checkpoint and validation summary; writes the curves."""
    out = work / "nnUNet_results" / settings.dataset / f"{settings.trainer}__nnUNetPlans__{CONFIGURATION}"
    fold = out / f"fold_{FOLD}"
    final = load_nnunet_checkpoint(fold / "checkpoint_final.pth")
    logged = final["logging"]
    ema = [float(v) for v in logged.get("ema_fg_dice", [])]
    epoch_seconds = sum(
        float(b) - float(a)
        for a, b in zip(logged.get("epoch_start_timestamps", []), logged.get("epoch_end_timestamps", []))
    )
    best_epoch = int(np.argmax(ema)) + 1 if ema else None
    write_curves(Path(results) / "live", logged, settings.iterations_per_epoch * summary["batch_size"])
    val_summary = fold / "validation" / "summary.json"
    final_val = json.loads(val_summary.read_text()) if val_summary.is_file() else {}
    dataset = json.loads((out / "dataset.json").read_text())
    names = {str(v): k for k, v in dataset["labels"].items()}
    return {
        "method": METHOD,
        "trainer": settings.trainer,
        "configuration": CONFIGURATION,
        "fold": FOLD,
        "epochs_run": int(final["current_epoch"]),
        "epochs": settings.epochs,
        "iterations_per_epoch": settings.iterations_per_epoch,
        "val_iterations_per_epoch": settings.val_iterations_per_epoch,
        "monitor": "ema_pseudo_dice",
        "best_ema_pseudo_dice": _float(final.get("_best_ema")),
        "best_epoch": best_epoch,
        "pseudo_dice_note": "nnU-Net's pseudo Dice: foreground mean over classes 1..4 on validation patches, "
        "not our evaluator's Dice",
        "final_validation_dice": _float(final_val.get("foreground_mean", {}).get("Dice")),
        "final_validation_dice_per_class": {
            names.get(k, k): _float(v.get("Dice")) for k, v in final_val.get("mean", {}).items()
        },
        "predicted_with": settings.checkpoint_file,
        "tta": settings.tta,
        "backbone": f"nnU-Net {CONFIGURATION} {summary.get('network', 'U-Net')}",
        "backbone_weights": "none",
        "trainable_parameters": count_parameters(plans, dataset),
        **{k: round(v, 1) for k, v in timings.items()},
        "epoch_seconds": round(epoch_seconds, 1),
        "final_validation_seconds": final_validation_seconds((work / "logs" / "train.log").read_text()),
        "device": device,
        "plan": summary,
        "dataset": settings.dataset,
        "settings": settings.as_dict(),
    }


def _geometry(processed: Processed, cfg: dict[str, Any]) -> tuple[list[float], float]:
    """HU window and cross-section step of the data: from its ``summary.json``, else from ``preprocess``."""
    prep = cfg.get("preprocess", {})
    window = processed.summary.get("window_hu", prep.get("window_hu"))
    step = processed.summary.get("step_mm", prep.get("step_mm"))
    if window is None or len(window) != 2 or not float(window[0]) < float(window[1]):
        raise InputError("summary.json", f"window_hu must be [lo, hi] with lo < hi, got {window!r}")
    if step is None or not float(step) > 0:
        raise InputError("summary.json", f"step_mm must be positive, got {step!r}")
    return [float(window[0]), float(window[1])], float(step)


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <where>: <problem>`` and returns 2 on bad input or a failed nnU-Net step."""
    parser = argparse.ArgumentParser(prog="python -m plaque.baselines.nnunet", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="preprocessed slices (data/processed)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="model folder: best.pt and nnU-Net's own folders (scratch, rebuilt every run)",
    )
    parser.add_argument("--predictions", type=Path, required=True, help="test predictions (results/predictions/nnunet)")
    parser.add_argument("--results", type=Path, required=True, help="metrics folder (results/stage2/nnunet)")
    add_config_options(parser)
    add_device_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def run() -> None:
        cfg = load_config(args.params, args.profile)
        device = resolve_device(args.device)
        if device.index not in (None, 0):
            raise InputError("--device", "nnU-Net's command line takes cpu or cuda (the first visible GPU)")
        run_nnunet(args.data, args.out, args.predictions, args.results, cfg, from_config(cfg), device.type)

    return run_cli(run)
