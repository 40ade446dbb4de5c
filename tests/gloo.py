"""Run a function on several CPU ranks joined by a gloo process group, and collect what each returns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist


def _entry(rank: int, world: int, init_file: str, results: str, fn: Callable[[int], Any]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank), f"{results}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn: Callable[[int], Any], tmp_path: Path, world: int = 2) -> list[Any]:
    """``[fn(0), ..., fn(world - 1)]``, each computed in its own process of one process group.

    ``fn`` must be a module-level function (it is pickled into the workers) returning tensors or
    containers of tensors.
    """
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    torch.multiprocessing.spawn(_entry, args=(world, str(tmp_path / "init"), str(tmp_path), fn), nprocs=world)
    return [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
