"""Locate the repository root, whether code runs from the root (papermill, DVC), from notebooks/ (nbval)
or from anywhere else (the package's own checkout)."""

from __future__ import annotations

from pathlib import Path

MARKERS = ("params.yaml", "dvc.yaml")


def _search(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if all((folder / m).exists() for m in MARKERS):
            return folder
    return None


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd, then this package's checkout) holding
    `params.yaml` and `dvc.yaml`."""
    here = (start or Path.cwd()).resolve()
    found = _search(here) or (None if start else _search(Path(__file__).resolve().parent))
    if found is None:
        raise FileNotFoundError(f"no plaque repository (params.yaml + dvc.yaml) at or above {here}")
    return found
