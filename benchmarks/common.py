"""What the benchmark scripts share: a processed dataset to run on, and peak-memory readings."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import torch

from plaque.data.phantom import generate_cohort
from plaque.data.preprocess import preprocess


def ensure_processed(data: Path, cfg: dict[str, Any], scratch: Path) -> Path:
    """``data`` when it exists, else the profile's phantom cohort generated and preprocessed under ``scratch``."""
    if data.exists():
        return data
    phantom = cfg["phantom"]
    generate_cohort(scratch / "raw", phantom["patients"], phantom["seed"], phantom, phantom["processes"])
    preprocess(scratch / "raw", scratch / "processed", cfg["preprocess"], cfg["preprocess"]["processes"])
    return scratch / "processed"


def peak_memory(device: torch.device) -> str:
    """Peak resident memory of this process, and the peak allocated on the GPU when ``device`` is CUDA."""
    text = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident"
    if device.type == "cuda":
        text += f", {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB on the GPU"
    return text
