"""Checkpoint files: atomic writes, weights-only reads, and RNG states as plain tensors.

Every checkpoint this package writes loads with ``torch.load(..., weights_only=True)``:
it holds only tensors, dicts, lists, tuples, numbers, strings, booleans and ``None``.
Loading never unpickles arbitrary objects, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plaque.classes import CLASS_NAMES
from plaque.errors import InputError


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with `torch.save` so that ``path`` holds either the old or the new file, never a partial one.

    The bytes go to ``.<name>.tmp`` in the same folder, are flushed to disk, and the temporary file
    then replaces ``path`` in one rename. On failure the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `torch.save` without unpickling arbitrary objects.

    Raises:
        InputError: the file is missing, unreadable or truncated, is not a dict, or holds objects
            that need pickle to load (those are refused, never loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.findall(r"GLOBAL (\S+)", str(e))
        if needs:
            raise InputError(
                path,
                f"holds {needs[0]}, which needs pickle to load; refusing (only weights_only checkpoints are accepted)",
            ) from None
        raise InputError(path, "not a readable checkpoint (corrupt, truncated or not written by torch.save)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, f"not a readable checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a dict of tensors, got {type(obj).__name__}")
    return obj


def model_record(method: str, cfg: dict[str, Any], preprocess: dict[str, Any], **more: Any) -> dict[str, Any]:
    """What a trained model's ``best.pt`` carries besides its weights, so that it can be used on its own:
    ``method``, the resolved configuration ``config``, the class map ``classes`` (id → name), the
    cross-section settings ``preprocess`` of its training data, and ``more``."""
    return {"method": method, "config": cfg, "classes": dict(enumerate(CLASS_NAMES)), "preprocess": preprocess, **more}


def load_state_strictly(module: nn.Module, state: Any, path: Path, what: str) -> None:
    """``module.load_state_dict(state)``, strictly; a missing state or a mismatch is an `InputError` naming ``path``.

    Args:
        what: what the file was expected to be (``"a Stage-1 best.pt"``), for the message.
    """
    if not isinstance(state, dict):
        raise InputError(path, f"holds no 'model' state dict; expected {what}")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(e)
        raise InputError(path, f"does not fit the configured model ({first}); expected {what}") from None


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The state of the torch, CUDA (of ``device``), NumPy and Python generators, as weights-only values.

    Returns:
        ``{"torch": uint8 tensor, "cuda": uint8 tensor | None, "numpy": {...}, "python": {...}}``;
        the Mersenne-Twister keys are ``(624,)`` and ``(625,)`` int64 tensors.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    cuda = device is not None and device.type == "cuda"
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if cuda else None,
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore the generators from `rng_state` output."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
