"""What the stage entry points share: common options, one-line errors, the distributed set-up."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from plaque.cli import add_config_options, run_cli
from plaque.config import load_config
from plaque.train.distributed import DistInfo, cleanup, init_distributed
from plaque.train.trainer import FitResult


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--params``, ``--profile`` and ``--fresh``."""
    add_config_options(parser)
    parser.add_argument("--fresh", action="store_true", help="ignore OUT/last.pt and start afresh")


def run_stage(args: argparse.Namespace, train: Callable[[dict[str, Any], DistInfo], FitResult]) -> int:
    """Resolve the configuration (``args.params``, ``args.profile``), join the process group, run
    ``train(cfg, info)`` with logging on rank 0, and leave the group, through `plaque.cli.run_cli` (glibc's
    malloc keeping freed memory, one-line errors).

    Returns:
        The exit code: 0, or 2 after printing ``error: <where>: <problem>`` as one line on standard error.
    """

    def body() -> None:
        cfg = load_config(args.params, args.profile)
        info = init_distributed()
        level = logging.INFO if info.is_main else logging.WARNING
        logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
        try:
            train(cfg, info)
        finally:
            cleanup()

    return run_cli(body)
