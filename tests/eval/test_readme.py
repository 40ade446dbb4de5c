"""The README's results section: replaced between its markers only; its figure copied; ``make readme``'s command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from plaque.errors import InputError
from plaque.eval.readme import README_END, README_START, copy_figure, main, update_readme

README = f"""# Project

Intro text with a \\backslash and $dollar.

## Results

{README_START}
| old | table |
{README_END}

## After

Kept as it is.
"""


def test_update_readme_replaces_only_the_marked_section_and_is_idempotent(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    table = "| method | Dice |\n|---|---|\n| Ours | **0.9** \\1 \\g<0> |\n"  # regex replacement syntax stays literal
    update_readme(readme, table)
    text = readme.read_text()
    before, rest = text.split(README_START)
    inside, after = rest.split(README_END)
    assert before == README.split(README_START)[0] and after == README.split(README_END)[1]
    assert table.rstrip() in inside and "old" not in inside
    assert text.count(README_START) == 1 and text.count(README_END) == 1
    update_readme(readme, table)
    assert readme.read_text() == text


@pytest.mark.parametrize(
    "text",
    ["# Project\n\nno markers\n", f"{README_START}\nonly the start\n", f"{README_END}\nreversed\n{README_START}\n"],
)
def test_update_readme_without_markers_raises_and_leaves_the_file(tmp_path: Path, text: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(InputError, match="markers"):
        update_readme(readme, "| table |\n")
    assert readme.read_text() == text


def test_command_line_copies_the_table_and_names_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme, table = tmp_path / "README.md", tmp_path / "summary.md"
    figure, copy = tmp_path / "figures" / "learning_curves.png", tmp_path / "docs" / "learning_curves.png"
    paths = ["--table", str(table), "--readme", str(readme)]
    paths += ["--figures-from", str(figure.parent), "--figures-to", str(copy.parent)]
    readme.write_text(README)
    assert main(paths) == 2
    assert capsys.readouterr().err.strip() == f"error: {table}: not found (run the pipeline first: dvc repro)"
    assert readme.read_text() == README
    table.write_text("| method | Dice |\n|---|---|\n| Ours | 0.8 |\n")
    assert main(paths) == 0  # no figure yet: the table alone
    assert "| Ours | 0.8 |" in readme.read_text() and "| old | table |" not in readme.read_text()
    assert not copy.exists()
    figure.parent.mkdir()
    figure.write_bytes(b"\x89PNG figure")
    assert main(paths) == 0
    assert copy.read_bytes() == b"\x89PNG figure"
    assert sorted(p.name for p in copy.parent.iterdir()) == ["learning_curves.png"]  # the qualitative one is missing


def test_copy_figure_replaces_the_copy_and_leaves_it_when_the_figure_is_missing(tmp_path: Path) -> None:
    figure, copy = tmp_path / "qualitative.png", tmp_path / "docs" / "qualitative.png"
    assert not copy_figure(figure, copy) and not copy.exists()
    figure.write_bytes(b"new")
    assert copy_figure(figure, copy) and copy.read_bytes() == b"new"
    figure.unlink()
    assert not copy_figure(figure, copy) and copy.read_bytes() == b"new"
    assert sorted(p.name for p in copy.parent.iterdir()) == ["qualitative.png"]  # no temporary file left
