"""glibc's malloc told to keep the memory that training frees, so the next step need not fault it in again.

PyTorch on the CPU frees and reallocates the same activation and gradient buffers every step. With glibc's
defaults, blocks above the mmap threshold (128 KiB, raised as such blocks are freed, at most 32 MiB) come from
fresh ``mmap`` calls, and free memory at the top of the heap beyond the trim threshold (twice the mmap
threshold) goes back to the system. Either way the next step touches fresh pages, and the kernel faults them
in and zero-fills them one by one: a demo Stage-2 run of 12 epochs took 6.6 million page faults and 15 s of
system time on 2 cores. `keep_heap` sets:

- the mmap threshold to 32 MiB, the most glibc allows (setting any of these three turns glibc's own
  adjustment of the threshold off, so it must be set with the others);
- the trim threshold to 1 GiB: freed memory stays in the heap for the next step;
- the top pad to 256 MiB: the heap grows in large steps.

Measured on 2 cores (docs/benchmarks.md, "Freed memory kept in the heap"): the whole demo ran 47.9 minutes
against 51.7 and trained the same weights tensor for tensor; peak resident memory grew by 0.1–0.2 GiB.

`keep_heap` sets them in this process (``mallopt``) and, through glibc's ``MALLOC_*_`` environment
variables, in every process it starts (nnU-Net's command lines, ``torch.distributed.run``'s workers). It does
nothing where the C library is not glibc, or where any of those variables is set already, by the user or by
a parent process that called it: glibc read them when the process started.
"""

from __future__ import annotations

import ctypes
import logging
import os

logger = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h) and the values set, by their environment variable names.
_SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_MMAP_THRESHOLD_": (-3, 32 << 20),  # M_MMAP_THRESHOLD
    "MALLOC_TRIM_THRESHOLD_": (-1, 1 << 30),  # M_TRIM_THRESHOLD
    "MALLOC_TOP_PAD_": (-2, 256 << 20),  # M_TOP_PAD
}


def keep_heap() -> bool:
    """Apply the settings of the module docstring to this process and its future children.

    Returns:
        True when they were applied; False where the C library is not glibc, the user set any of the
        variables, or glibc refused a setting (logged as a warning).
    """
    if not _glibc():
        return False
    if any(name in os.environ for name in _SETTINGS):
        return False
    libc = ctypes.CDLL(None)
    for name, (param, value) in _SETTINGS.items():  # the mmap threshold first: refused, it leaves the defaults
        if libc.mallopt(param, value) != 1:
            logger.warning("glibc refused %s=%d; malloc keeps its defaults", name, value)
            return False
    os.environ.update({name: str(value) for name, (_, value) in _SETTINGS.items()})
    return True


def _glibc() -> bool:
    """Whether this process's C library is glibc."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # no such name here (not glibc), or no confstr at all
        return False
