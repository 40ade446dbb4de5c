"""What the package's command lines share: the ``--params``/``--profile``/``--device`` options and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plaque.allocator import keep_heap
from plaque.errors import InputError

if TYPE_CHECKING:
    import torch

EXIT_BAD_INPUT = 2


def command_line(module: str, script: str, *examples: str) -> dict[str, Any]:
    """`argparse.ArgumentParser` keywords shared by the commands that are also console scripts.

    ``prog`` is ``script`` when the command runs as that console script, else ``python -m <module>``, so usage
    lines and errors name the command as it was typed; the epilog shows ``examples`` (arguments only), kept as
    written, e.g. ``command_line("plaque.segment", "plaque-segment", "--checkpoint best.pt --input scan --out seg")``.
    """
    name = script if Path(sys.argv[0]).name == script else f"python -m {module}"
    lines = "\n".join(f"  {name} {example}" for example in examples)
    other = f"python -m {module}" if name == script else script
    epilog = f"example{'s' if len(examples) > 1 else ''} ({other} is the same command):\n{lines}"
    return {"prog": name, "epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_config_options(
    parser: argparse.ArgumentParser, profile_help: str = "profile to apply (default: the file's `profile` key)"
) -> None:
    """``--params FILE`` (default: the repository's params.yaml) and ``--profile NAME``."""
    parser.add_argument("--params", type=Path, default=None, help="params file (default: repository params.yaml)")
    parser.add_argument("--profile", default=None, help=profile_help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda|cuda:N|auto`` (default ``auto``: the first GPU when one is visible, else the CPU)."""
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto = cuda when a GPU is visible, else cpu)",
    )


def resolve_device(name: str) -> torch.device:
    """The device ``--device`` names (see `add_device_option`).

    Raises:
        InputError: not a device name, or CUDA asked for where no GPU is visible.
    """
    import torch  # here, so that command lines without a device start without loading torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError("--device", f"{name!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{name} asked for, but no CUDA device is visible")
    if device.type not in ("cpu", "cuda"):
        raise InputError("--device", f"{name!r}: only cpu and cuda are supported")
    return device


def report_error(error: Exception) -> int:
    """Print ``error: <message>`` as one line on standard error; returns `EXIT_BAD_INPUT`."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_cli(body: Callable[[], int | None], errors: tuple[type[Exception], ...] = (InputError,)) -> int:
    """Run ``body()`` with glibc's malloc keeping freed memory (`plaque.allocator.keep_heap`); its return value
    (``None`` = 0) is the exit code, and an exception of a type in ``errors`` becomes one line on standard
    error and exit code `EXIT_BAD_INPUT`, never a traceback."""
    keep_heap()
    try:
        code = body()
    except errors as e:
        return report_error(e)
    return 0 if code is None else code
