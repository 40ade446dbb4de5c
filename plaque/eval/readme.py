"""Copy the results table and two figures onto the README's front page (``make readme``).

    python -m plaque.eval.readme [--table reports/tables/summary.md] [--readme README.md]
                                 [--figures-from reports/figures] [--figures-to docs]

The evaluate stage writes ``reports/tables/summary.md`` and the figures under ``reports/figures`` (declared
outputs); this replaces the text between the README's ``<!-- results:start -->`` and ``<!-- results:end -->``
markers with the table, and copies `FIGURES` (the qualitative figure and the learning curves) to ``docs/``,
the pictures the README shows (each when it exists), so that the results stay visible on the repository's
front page without the pipeline writing an undeclared file. ``make demo`` runs it after ``dvc repro``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from plaque.cli import command_line, run_cli
from plaque.errors import InputError

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
FIGURES_FROM = Path("reports/figures")  # written by the evaluate stage
FIGURES_TO = Path("docs")  # the README's pictures, committed
FIGURES = ("qualitative.png", "learning_curves.png")  # what the README shows


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between `README_START` and `README_END` in ``readme`` with ``table``.

    Raises:
        InputError: the markers are missing or out of order (the file is left as it was).
    """
    text = Path(readme).read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise InputError(readme, f"markers {README_START} … {README_END} not found")
    block = (
        f"{README_START}\n<!-- copied from reports/tables/summary.md by `make readme`; do not edit -->\n"
        f"{table.rstrip()}\n{README_END}"
    )
    Path(readme).write_text(pattern.sub(lambda _: block, text, count=1))


def copy_figure(figure: Path, copy: Path) -> bool:
    """Copy ``figure`` to ``copy`` (through a temporary file and a rename) when it exists.

    Returns:
        Whether it was copied; a missing ``figure`` leaves ``copy`` as it was.
    """
    figure, copy = Path(figure), Path(copy)
    if not figure.is_file():
        return False
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(f".{copy.name}.tmp")
    shutil.copyfile(figure, tmp)
    os.replace(tmp, copy)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line; one-line error and exit status 2 on a missing table or README or missing markers."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        **command_line("plaque.eval.readme", "plaque-readme", "--table reports/tables/summary.md --readme README.md"),
    )
    parser.add_argument("--table", type=Path, default=Path("reports/tables/summary.md"), help="the results table")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="the README to update")
    parser.add_argument(
        "--figures-from",
        type=Path,
        default=FIGURES_FROM,
        help=f"the evaluate stage's figures (default: {FIGURES_FROM})",
    )
    parser.add_argument(
        "--figures-to",
        type=Path,
        default=FIGURES_TO,
        help=f"where the README shows {', '.join(FIGURES)} (default: {FIGURES_TO})",
    )
    args = parser.parse_args(argv)

    def run() -> None:
        for path in (args.table, args.readme):
            if not path.is_file():
                raise InputError(path, "not found (run the pipeline first: dvc repro)")
        update_readme(args.readme, args.table.read_text())
        print(f"{args.readme}: results section replaced by {args.table}")
        for name in FIGURES:
            figure, copy = args.figures_from / name, args.figures_to / name
            if copy_figure(figure, copy):
                print(f"{copy}: copied from {figure}")
            else:
                print(f"{figure}: not found, {copy} left as it was")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
