"""Run a stage notebook with papermill, its output on the terminal and in a log file beside the executed copy.

    python -m plaque.notebook notebooks/05_stage2.ipynb reports/notebooks/05_stage2_ours.ipynb \\
        -p profile demo -p method ours ...

What DVC runs for every stage (`plaque.pipeline`). The executed notebook goes to OUT, and everything its cells
print — the stage's log lines and progress bars included — streams to the terminal as it comes
(papermill's ``log_output``) and into ``OUT`` with the suffix ``.log``, each line once: the kernel is started
with its standard output and error on ``/dev/null``, because ipykernel echoes what the cells' subprocesses
write to the streams it inherited, which papermill logs as well. A failing cell fails the command
(exit status 1, papermill's error on the last lines). Values given with ``-p`` are parsed as YAML scalars,
as papermill's own ``-p`` does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import yaml

KERNEL = "plaque"


@contextmanager
def _terminal_only_for_us() -> Iterator[TextIO]:
    """Point file descriptors 1 and 2 to ``/dev/null`` for a kernel started meanwhile to inherit; yields a
    stream on the original standard error, restored on exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    devnull = os.open(os.devnull, os.O_WRONLY)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        terminal.close()


def run_notebook(notebook: Path, executed: Path, parameters: dict[str, object], *, kernel: str = KERNEL) -> Path:
    """Execute ``notebook`` into ``executed`` with ``parameters``; returns the log file (``executed`` + ``.log``)."""
    import papermill  # here: the package's other command lines never need it

    executed.parent.mkdir(parents=True, exist_ok=True)
    log_path = executed.with_suffix(".log")
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    with _terminal_only_for_us() as stream:
        terminal = logging.StreamHandler(stream)
        terminal.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.addHandler(terminal)
        try:
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=parameters,
                kernel_name=kernel,
                cwd=".",
                log_output=True,
                progress_bar=False,
            )
        finally:
            logger.removeHandler(handler)
            logger.removeHandler(terminal)
            handler.close()
    return log_path


def main(argv: list[str] | None = None) -> int:
    """Command line; exit status 1 when a cell fails."""
    parser = argparse.ArgumentParser(prog="python -m plaque.notebook", description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="the notebook to run")
    parser.add_argument("executed", type=Path, help="where the executed copy goes (its log beside it)")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter of the notebook's `parameters` cell",
    )
    args = parser.parse_args(argv)
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        run_notebook(args.notebook, args.executed, parameters)
    except Exception as e:  # papermill's PapermillExecutionError names the failing cell and its error
        print(
            f"error: {args.notebook}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
