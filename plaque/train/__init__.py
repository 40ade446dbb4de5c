"""One trainer for every model: DDP under `torchrun`, early stopping, resumable checkpoints, DVCLive."""

from plaque.train.checkpoint import load_checkpoint, save_atomic
from plaque.train.distributed import DistInfo, broadcast_object, cleanup, init_distributed, resolve_nproc
from plaque.train.trainer import FitConfig, FitResult, fit, seed_everything, to_device

__all__ = [
    "DistInfo", "FitConfig", "FitResult", "broadcast_object", "cleanup", "fit", "init_distributed",
    "load_checkpoint", "resolve_nproc", "save_atomic", "seed_everything", "to_device",
]
