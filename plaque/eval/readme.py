"""Copy the results table into the README's front page: ``python -m plaque.eval.readme`` (``make readme``).

    python -m plaque.eval.readme [--table reports/tables/summary.md] [--readme README.md]

The evaluate stage writes ``reports/tables/summary.md`` (a declared output); this replaces the text between
the README's ``<!-- results:start -->`` and ``<!-- results:end -->`` markers with it, so that the results
stay visible on the repository's front page without the pipeline writing an undeclared file. ``make demo``
runs it after ``dvc repro``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from plaque.cli import run_cli
from plaque.errors import InputError

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


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


def main(argv: list[str] | None = None) -> int:
    """Command line; one-line error and exit status 2 on a missing file or missing markers."""
    parser = argparse.ArgumentParser(prog="python -m plaque.eval.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("reports/tables/summary.md"), help="the results table")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="the README to update")
    args = parser.parse_args(argv)

    def run() -> None:
        for path in (args.table, args.readme):
            if not path.is_file():
                raise InputError(path, "not found (run the pipeline first: dvc repro)")
        update_readme(args.readme, args.table.read_text())
        print(f"{args.readme}: results section replaced by {args.table}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
