"""Process-group set-up for `torchrun`, and the few collectives the trainer needs.

A run is launched either as a plain ``python -m ...`` (one process) or with
``python -m torch.distributed.run --nproc_per_node N ...``, which sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` for each process. Every helper here is a no-op
when the world size is 1, so the same code runs on a laptop CPU and on N GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from plaque.errors import InputError

T = TypeVar("T")

# Rank 0 validates alone while the other ranks wait in a collective; the default
# process-group timeout (10 minutes for NCCL) is too short for a full validation set.
DEFAULT_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run.

    Attributes:
        rank: global rank, ``0 <= rank < world_size``.
        local_rank: rank on this machine; picks the GPU ``cuda:local_rank``.
        world_size: number of processes.
        device: the device this process computes on.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that logs and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(name, f"environment variable is not an integer: {value!r}") from None


def init_distributed(*, use_cuda: bool | None = None, timeout: timedelta = DEFAULT_TIMEOUT) -> DistInfo:
    """Read the `torchrun` environment, pick the device and, when ``WORLD_SIZE > 1``, join the process group.

    Args:
        use_cuda: compute on ``cuda:LOCAL_RANK`` (NCCL) or on the CPU (gloo); ``None`` uses CUDA when available.
        timeout: how long a collective may wait for the slowest rank.

    Raises:
        InputError: malformed ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, or fewer visible GPUs than local ranks.
    """
    rank, local_rank, world_size = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError("RANK/WORLD_SIZE", f"rank {rank} is not in a world of size {world_size}")
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                "LOCAL_RANK", f"{local_rank}, but only {torch.cuda.device_count()} CUDA devices are visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=timeout,
            device_id=device if cuda else None,
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_nproc(value: str | int) -> int:
    """Processes per node for `torchrun`: ``"auto"`` is the number of visible GPUs (1 without any)."""
    if value == "auto":
        return torch.cuda.device_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError("train.nproc_per_node", f"expected 'auto' or a positive integer, got {value!r}")
    return value


def _object_device(info: DistInfo) -> torch.device | None:
    return info.device if info.device.type == "cuda" else None


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; the argument is ignored on other ranks)."""
    if info.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_object_device(info))
    return box[0]


def gather_object(obj: T, info: DistInfo, dst: int = 0) -> list[T] | None:
    """Every rank's ``obj``, indexed by rank, on rank ``dst``; ``None`` on the others."""
    if info.world_size == 1:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum of ``values`` over ranks (every rank must pass the same length)."""
    if info.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here."""
    if info.world_size > 1:
        dist.barrier()
