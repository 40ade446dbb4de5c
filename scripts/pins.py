"""Print the pinned requirements of the named packages from pyproject.toml (the one source of pins).

Used by the Makefile to install torch and torchvision before everything else:
``python scripts/pins.py torch torchvision`` -> ``torch==2.14.1 torchvision==0.29.1``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def pins(names: list[str], pyproject: Path) -> list[str]:
    """The dependency strings of ``names`` as written in ``pyproject``'s ``[project].dependencies``."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    by_name = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower(): d for d in deps}
    missing = [n for n in names if n.lower() not in by_name]
    if missing:
        raise SystemExit(f"error: {pyproject}: no dependency named {', '.join(missing)}")
    return [by_name[n.lower()] for n in names]


if __name__ == "__main__":
    print(" ".join(pins(sys.argv[1:], Path(__file__).resolve().parents[1] / "pyproject.toml")))
