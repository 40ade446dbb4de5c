"""Training-set DataLoader throughput against what a training step consumes.

One epoch of the training split as the trainer loads it: `plaque.data.dataset.SliceDataset` with the
``augment`` section's random rotation and centre shift, shuffled, ``train.num_workers`` workers (started with the
epoch, as the trainer's non-persistent workers are), pinned memory on CUDA. The headroom is the
loader's images/s over the images/s of a training step of `ours` (`benchmarks.steps`); below 1 the
GPU or CPU waits for data, and with ``num_workers: 0`` the loading time adds to every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from plaque.data.dataset import SliceDataset

TARGET_HEADROOM = 5.0


@dataclass(frozen=True)
class LoaderFigures:
    """One epoch of the training loader, and its headroom over a consumption rate (``None`` without one)."""

    batch_size: int
    num_workers: int
    images: int
    seconds: float
    images_per_s: float
    consumption_images_per_s: float | None
    headroom: float | None


def training_loader(data: Path, cfg: dict[str, Any], batch_size: int, device: torch.device) -> DataLoader:
    """The training split with augmentation, loaded as `plaque.train.trainer.fit` loads it on one process."""
    aug = cfg["augment"]
    dataset = SliceDataset(data, "train", aug["rotation_p"], aug["rotation_max_deg"], aug["shift_mm"])
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=cfg["train"]["num_workers"],
        pin_memory=device.type == "cuda",
    )


def loader_throughput(
    data: Path, cfg: dict[str, Any], batch_size: int, device: torch.device, consumption_images_per_s: float | None
) -> LoaderFigures:
    """Time one epoch of `training_loader` (worker start included); headroom over ``consumption_images_per_s``."""
    torch.manual_seed(cfg["train"]["seed"])
    loader = training_loader(data, cfg, batch_size, device)
    images = 0
    start = time.perf_counter()
    for x, _ in loader:
        images += len(x)
    seconds = time.perf_counter() - start
    rate = images / seconds
    headroom = rate / consumption_images_per_s if consumption_images_per_s else None
    return LoaderFigures(
        batch_size, cfg["train"]["num_workers"], images, seconds, rate, consumption_images_per_s, headroom
    )
