"""Locate the repository root, whether code runs from the root (papermill, DVC) or from notebooks/ (nbval)."""

from __future__ import annotations

from pathlib import Path

MARKERS = ("params.yaml", "dvc.yaml")


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding `params.yaml` and `dvc.yaml`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / m).exists() for m in MARKERS):
            return folder
    raise FileNotFoundError(f"no plaque repository (params.yaml + dvc.yaml) at or above {here}")
