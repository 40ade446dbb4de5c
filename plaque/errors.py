"""Errors raised on bad user input; command-line entry points print them as one line."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input data or configuration. The message names the file (or key) and the problem."""

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")
