"""Progress bars that stay readable in a log: every long loop of the package shows one through `progress`.

On a terminal the bar refreshes as usual. When standard error is not a terminal (``dvc repro`` running a
notebook, a batch job, a log file), it refreshes at most every `LOG_INTERVAL_S` seconds, so a log gets a
line now and then instead of thousands of carriage-return updates.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_INTERVAL_S = 30.0


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, throttled to `LOG_INTERVAL_S` when standard error is not a terminal."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 2)
    return tqdm(iterable, **kwargs)
