"""Make the upstream inputs a notebook needs when it runs on its smoke defaults in ``scratch/``.

A stage notebook run by DVC reads its inputs from the pipeline's folders. Run on its defaults (nbval,
a first look in JupyterLab) it reads ``scratch/``, and the inputs may not exist yet: `ensure_scratch`
makes them, by the same command-line entry points the pipeline runs, in order (phantom cohort →
processed slices → Stage-1 prior → Stage-2 predictions, and the vessel model), each only when missing. Paths outside
``scratch/`` are never created here: a missing pipeline input stays an error of the notebook.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRATCH = "scratch"


def _in_scratch(root: Path, path: Path) -> bool:
    return Path(path).resolve().is_relative_to((root / SCRATCH).resolve())


def _run(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=root)


def _missing(root: Path, path: Path | None) -> bool:
    return path is not None and not Path(path).exists() and _in_scratch(root, path)


def ensure_scratch(
    root: Path,
    profile: str,
    *,
    raw: Path | None = None,
    data: Path | None = None,
    prior: Path | None = None,
    predictions: Path | None = None,
    vessel: Path | None = None,
) -> None:
    """Create, when given, missing and inside ``root/scratch``, the phantom cohort ``raw``, the processed
    ``data`` (from ``scratch/raw``), the Stage-1 ``prior`` checkpoint (``.../stage1/<variant>/best.pt``:
    the folder names the variant, trained on ``data``), the ``predictions`` of ``ours``
    (``.../predictions/ours``, trained on ``data`` with ``prior``) and the ``vessel`` model's ``best.pt``
    (trained on ``scratch/raw`` in the splits of ``data``).

    A failing step raises `subprocess.CalledProcessError`.
    """
    root = Path(root)
    scratch = root / SCRATCH
    if _missing(root, raw):
        _run(root, "plaque.data.phantom", "--out", str(raw), "--profile", profile)
    if _missing(root, data):
        ensure_scratch(root, profile, raw=scratch / "raw")
        _run(root, "plaque.data.preprocess", "--raw", str(scratch / "raw"), "--out", str(data), "--profile", profile)
    if _missing(root, prior):
        variant = Path(prior).parent.name
        _run(
            root,
            "plaque.train.stage1",
            "--data",
            str(data),
            "--out",
            str(Path(prior).parent),
            "--variant",
            variant,
            "--results",
            str(scratch / "results/stage1" / variant),
            "--profile",
            profile,
        )
    if _missing(root, predictions):
        _run(
            root,
            "plaque.train.stage2",
            "--method",
            "ours",
            "--data",
            str(data),
            "--prior",
            str(prior),
            "--out",
            str(scratch / "models/stage2/ours"),
            "--results",
            str(scratch / "results/stage2/ours"),
            "--predictions",
            str(predictions),
            "--profile",
            profile,
        )
    if _missing(root, vessel):
        _run(
            root,
            "plaque.train.vessel",
            "--raw",
            str(scratch / "raw"),
            "--processed",
            str(data),
            "--out",
            str(Path(vessel).parent),
            "--results",
            str(scratch / "results/vessel"),
            "--profile",
            profile,
        )
