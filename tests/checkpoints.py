"""Untrained models saved in the trainer's checkpoint format, for tests that segment or predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from plaque.checkpoint import model_record, save_atomic
from plaque.models.build import build_model


def untrained_checkpoint(cfg: dict[str, Any], method: str, settings: dict[str, Any], path: Path) -> Path:
    """``method`` built from ``cfg`` with torch seed 0, untrained, saved to ``path`` with the cross-section
    ``settings`` (window_hu, crop_px, size, step_mm) a trained model records; returns ``path``."""
    torch.manual_seed(0)
    model, _ = build_model(cfg, method, None, pretrained=False)
    save_atomic({**model_record(method, cfg, settings), "format": 1, "epoch": 1, "model": model.state_dict()}, path)
    return path
