"""What the package's command lines share: the ``--params``/``--profile`` options and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from plaque.errors import InputError

EXIT_BAD_INPUT = 2


def add_config_options(parser: argparse.ArgumentParser,
                       profile_help: str = "profile to apply (default: the file's `profile` key)") -> None:
    """``--params FILE`` (default: the repository's params.yaml) and ``--profile NAME``."""
    parser.add_argument("--params", type=Path, default=None, help="params file (default: repository params.yaml)")
    parser.add_argument("--profile", default=None, help=profile_help)


def report_error(error: Exception) -> int:
    """Print ``error: <message>`` as one line on standard error; returns `EXIT_BAD_INPUT`."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_cli(body: Callable[[], int | None], errors: tuple[type[Exception], ...] = (InputError,)) -> int:
    """Run ``body()``; its return value (``None`` = 0) is the exit code, and an exception of a type in
    ``errors`` becomes one line on standard error and exit code `EXIT_BAD_INPUT`, never a traceback."""
    try:
        code = body()
    except errors as e:
        return report_error(e)
    return 0 if code is None else code
