"""``nnUNetTrainer_Plaque``: nnU-Net's standard trainer with a shorter schedule read from a JSON file, and its
final validation mirrored only when the test cases are.

nnU-Net instantiates trainer classes itself (``nnUNetv2_train ... -tr nnUNetTrainer_Plaque``), so the schedule
cannot be passed as arguments: the environment variable ``PLAQUE_NNUNET_SETTINGS`` names a JSON file
(written under ``--work`` by `plaque.baselines.nnunet.run`) with

    {"epochs": int, "iterations_per_epoch": int, "val_iterations_per_epoch": int, "tta": bool, "seed": int,
     "precision": "auto" | "bf16" | "fp16" | "fp32"}

Everything else (network, loss, optimiser, poly learning rate over ``epochs``, augmentation, deep supervision,
EMA pseudo-Dice checkpoint selection) is nnU-Net's, seeded, with two changes that save time and touch no weight,
and one that does: the precision on the CPU.

Precision. On a GPU nnU-Net autocasts its forward passes to fp16 by itself, and this trainer leaves that as it
is. On the CPU nnU-Net never autocasts (autocast is slow on processors without native bf16); this trainer runs
training and validation steps and the final validation under ``precision`` (``nnunet.precision``) resolved for
the CPU (`plaque.precision`): ``auto`` is bf16 on a CPU with native bf16 arithmetic, as every other method
trains there, else float32. On 2 cores of an AVX512-BF16 CPU its demo step (batch 32 of 32²) took 68 ms under
bf16 against 109 ms in float32. Gradients and the SGD step stay float32, as under nnU-Net's GPU autocast.

Seeding. nnU-Net seeds nothing: its weights start from torch's global generator, and its augmentation workers
(batchgenerators' ``NonDetMultiThreadedAugmenter``, ``seeds=None``) seed numpy and torch from the operating
system. This trainer seeds Python, numpy and torch with ``seed`` before the network is built, and gives each
augmentation worker its own seed derived from it (``get_dataloaders``); with no workers (``nnUNet_n_proc_DA=0``)
the augmentation runs on the seeded generators of the main process. On the CPU with at most one augmentation
worker per loader a run is then repeatable to the bit (a test trains twice); with several workers the order in
which their batches arrive still varies, and on a GPU nnU-Net's cuDNN autotuning does.

The two changes that save time:
- nnU-Net's final validation of the val cases always predicts with mirroring (four passes per 2D slice, about
  6 s a case on 2 CPU cores); with ``tta`` false this trainer predicts them as the test cases are predicted,
  without mirroring.
- nnU-Net redraws its large ``progress.png`` after every epoch, which costs about as much as a demo epoch on
  2 CPU cores; this trainer draws it every ``PLOT_EVERY`` epochs and after the last one.

nnU-Net finds the class through ``nnUNet_extTrainer`` (nnunetv2 >= 2.6, `nnunetv2.utilities.find_objects`):
it imports every module of the folders listed there, as top-level modules, and takes the first that has an
attribute of the requested name. `TRAINER_FOLDER` holds exactly one such module, which re-exports this class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from plaque.baselines.nnunet.predictor import cpu_autocast
from plaque.baselines.nnunet.settings import NNUNET_SCHEDULE, TRAINER_NAME
from plaque.precision import PRECISIONS, resolve_precision
from plaque.train.trainer import seed_everything  # nnU-Net draws from Python's, numpy's and torch's generators

SETTINGS_ENV = "PLAQUE_NNUNET_SETTINGS"
TRAINER_FOLDER = Path(__file__).resolve().parent / "ext"
SCHEDULE_KEYS = tuple(NNUNET_SCHEDULE)  # the keys of `Settings.schedule`
PLOT_EVERY = 10
MAX_SEED = 2**31 - 1  # numpy takes seeds below 2**32; the workers' seeds add small offsets
_CUDA = torch.device("cuda")  # nnUNetTrainer's default device


def read_settings(path: str | os.PathLike[str] | None = None) -> dict[str, int | bool | str]:
    """The schedule, ``tta``, ``seed`` and ``precision`` from ``path`` (default: the file
    ``$PLAQUE_NNUNET_SETTINGS`` names), checked."""
    if path is None:
        path = os.environ.get(SETTINGS_ENV)
        if not path:
            raise RuntimeError(
                f"{TRAINER_NAME} needs ${SETTINGS_ENV}: the JSON file with its schedule "
                f"({', '.join(SCHEDULE_KEYS)}), tta, seed and precision; "
                "run it through `python -m plaque.baselines.nnunet`"
            )
    settings: Any = json.loads(Path(path).read_text())
    if not isinstance(settings, dict):
        raise RuntimeError(f"{path}: expected a JSON object, got {type(settings).__name__}")
    checked: dict[str, int | bool | str] = {}
    for key in SCHEDULE_KEYS:
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RuntimeError(f"{path}: {key} must be a positive integer, got {value!r}")
        checked[key] = value
    if not isinstance(settings.get("tta"), bool):
        raise RuntimeError(f"{path}: tta must be true or false, got {settings.get('tta')!r}")
    checked["tta"] = settings["tta"]
    seed = settings.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RuntimeError(f"{path}: seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    checked["seed"] = seed
    precision = settings.get("precision")
    if precision not in PRECISIONS:
        raise RuntimeError(f"{path}: precision must be one of {list(PRECISIONS)}, got {precision!r}")
    checked["precision"] = precision
    return checked


@contextmanager
def seeded_augmenters(seed: int) -> Iterator[None]:
    """Within the block, nnU-Net's trainer module builds its ``NonDetMultiThreadedAugmenter`` with worker seeds
    ``seed + 1000 * n + i`` (``n``: the how-many-th loader, training first; ``i``: the worker) instead of none."""
    made = 0

    def build(*args: Any, num_processes: int, seeds: list[int] | None = None, **kwargs: Any) -> Any:
        nonlocal made
        first = seed + 1000 * made
        made += 1
        return NonDetMultiThreadedAugmenter(
            *args, num_processes=num_processes, seeds=[first + i for i in range(num_processes)], **kwargs
        )

    stock = trainer_module.NonDetMultiThreadedAugmenter
    trainer_module.NonDetMultiThreadedAugmenter = build  # type: ignore[misc]
    try:
        yield
    finally:
        trainer_module.NonDetMultiThreadedAugmenter = stock  # type: ignore[misc]


class nnUNetTrainer_Plaque(nnUNetTrainer):  # nnU-Net's naming convention for trainers
    """nnU-Net's trainer with ``num_epochs``, ``num_iterations_per_epoch``, ``num_val_iterations_per_epoch``, the
    final validation's mirroring, the seed and the CPU's precision from `read_settings`."""

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        settings = read_settings()
        self.seed = int(settings["seed"])
        seed_everything(self.seed)  # before `initialize` builds the network
        self.num_epochs = int(settings["epochs"])
        self.num_iterations_per_epoch = int(settings["iterations_per_epoch"])
        self.num_val_iterations_per_epoch = int(settings["val_iterations_per_epoch"])
        self.validation_mirroring = bool(settings["tta"])
        self.cpu_precision = resolve_precision(str(settings["precision"]), torch.device("cpu"))
        precision = self.cpu_precision if self.device.type == "cpu" else "nnU-Net's own autocast"
        self.print_to_log_file(
            f"{TRAINER_NAME}: {self.num_epochs} epochs x {self.num_iterations_per_epoch} "
            f"iterations (validation {self.num_val_iterations_per_epoch} iterations per epoch); final "
            f"validation {'with' if self.validation_mirroring else 'without'} mirroring; seed {self.seed}; "
            f"precision {precision}"
        )
        draw = self.logger.plot_progress_png

        def plot_progress_png(output_folder: str) -> None:
            if (self.current_epoch + 1) % PLOT_EVERY == 0 or self.current_epoch + 1 >= self.num_epochs:
                draw(output_folder)

        self.logger.plot_progress_png = plot_progress_png  # type: ignore[method-assign]

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's training step, on the CPU under ``precision`` (module docstring)."""
        with cpu_autocast(self.device, self.cpu_precision):
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation step, on the CPU under ``precision``."""
        with cpu_autocast(self.device, self.cpu_precision):
            return super().validation_step(batch)

    def get_dataloaders(self) -> tuple[Any, Any]:
        """nnU-Net's training and validation loaders, their augmentation workers seeded (`seeded_augmenters`)."""
        with seeded_augmenters(self.seed):
            return super().get_dataloaders()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's final validation, without mirroring unless ``tta``, on the CPU under ``precision``. The mirror
        axes the checkpoints record (and the test predictions use with ``tta``) are left as they were."""
        with cpu_autocast(self.device, self.cpu_precision):
            if self.validation_mirroring:
                super().perform_actual_validation(save_probabilities)
                return
            axes = self.inference_allowed_mirroring_axes
            self.inference_allowed_mirroring_axes = None
            try:
                super().perform_actual_validation(save_probabilities)
            finally:
                self.inference_allowed_mirroring_axes = axes
