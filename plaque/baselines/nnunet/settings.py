"""The ``nnunet`` settings of params.yaml (validated by `plaque.config`): dataset id and name, the training
schedule, the checkpoint predicted with, TTA, process counts, the batch cap and the seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from plaque.baselines.nnunet.export import dataset_folder_name

NNUNET_TRAINER = "nnUNetTrainer"
TRAINER_NAME = "nnUNetTrainer_Plaque"  # ours for anything else (`plaque.baselines.nnunet.trainer`)
# nnU-Net's own schedule (nnUNetTrainer.__init__): with exactly this, the stock trainer is used.
NNUNET_SCHEDULE = {"epochs": 1000, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50}


@dataclass(frozen=True)
class Settings:
    """Validated ``nnunet`` settings.

    Attributes:
        dataset_id, dataset_name: nnU-Net's ``DatasetXXX_<name>``.
        epochs, iterations_per_epoch, val_iterations_per_epoch: the training schedule.
        checkpoint: ``best`` (nnU-Net's best EMA pseudo-Dice on validation, like our methods' best.pt) or ``final``.
        tta: nnU-Net's mirroring test-time augmentation when predicting the test cases (and, with our trainer,
            the val cases of nnU-Net's final validation).
        processes: ``"auto"`` (nnU-Net's defaults) or the worker count for every nnU-Net step
            (fingerprint, preprocessing, augmentation, export, prediction).
        batch_size: ``"auto"`` (the batch nnU-Net's planner picks) or N: the 2D configuration's batch is capped
            to min(planned, N) in ``nnUNetPlans.json`` before training.
        seed: our trainer seeds nnU-Net's initialisation and augmentation with it
            (`plaque.baselines.nnunet.trainer`); nnU-Net's stock trainer seeds nothing.
        precision: what our trainer and the predictor run under on the CPU (`plaque.precision`'s names; ``auto``
            is bf16 on a CPU with native bf16, else fp32); on a GPU nnU-Net's own fp16 autocast.
    """

    dataset_id: int
    dataset_name: str
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    checkpoint: str
    tta: bool
    processes: int | str
    batch_size: int | str
    seed: int
    precision: str

    @property
    def dataset(self) -> str:
        """``DatasetXXX_<name>``."""
        return dataset_folder_name(self.dataset_id, self.dataset_name)

    @property
    def trainer(self) -> str:
        """nnU-Net's stock trainer for its own schedule with TTA (how nnU-Net validates), else ours
        (`plaque.baselines.nnunet.trainer`)."""
        return NNUNET_TRAINER if self.schedule == NNUNET_SCHEDULE and self.tta else TRAINER_NAME

    @property
    def schedule(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in NNUNET_SCHEDULE}

    @property
    def trainer_settings(self) -> dict[str, int | bool | str]:
        """What our trainer reads (`plaque.baselines.nnunet.trainer.read_settings`): the schedule, ``tta``,
        ``seed`` and ``precision``."""
        return {**self.schedule, "tta": self.tta, "seed": self.seed, "precision": self.precision}

    @property
    def checkpoint_file(self) -> str:
        return f"checkpoint_{self.checkpoint}.pth"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_config(cfg: dict[str, Any]) -> Settings:
    """The ``nnunet`` section of a resolved configuration (`plaque.config.load_config`), as `Settings`.

    Raises:
        InputError: a dataset name nnU-Net cannot use (letters and digits only).
    """
    settings = Settings(**cfg["nnunet"])
    _ = settings.dataset  # checks the name
    return settings
