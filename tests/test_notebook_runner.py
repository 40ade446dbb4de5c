"""`python -m plaque.notebook`: a stage's notebook output reaches the terminal and its log file, each line once."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from plaque.notebook import main

SUBPROCESS_CELL = """import subprocess, sys
subprocess.run([sys.executable, "-c", "import sys; print('line-from-subprocess', file=sys.stderr)"], check=True)
print('line-from-kernel', n)"""


def notebook(path: Path, body: str) -> Path:
    """Write a two-cell notebook: a `parameters` cell ``n = 1``, then ``body``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "plaque", "display_name": "Python (plaque)", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_output_reaches_terminal_and_log_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ipykernel captures its subprocesses' output (and echoed it twice) only outside pytest: look like outside
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    executed = tmp_path / "out" / "run.ipynb"
    assert main([str(notebook(tmp_path / "nb.ipynb", SUBPROCESS_CELL)), str(executed), "-p", "n", "2"]) == 0
    terminal = capfd.readouterr()
    shown = terminal.out + terminal.err
    assert shown.count("line-from-subprocess") == 1, shown
    assert shown.count("line-from-kernel 2") == 1, shown
    log = executed.with_suffix(".log").read_text()
    assert log.count("line-from-subprocess") == 1 and log.count("line-from-kernel 2") == 1
    assert executed.is_file()


def test_failing_cell_fails_the_command(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "raise ValueError('broken input: data/x.dcm')")
    assert main([str(nb), str(tmp_path / "run.ipynb")]) == 1
    err = capfd.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: {nb}:")
    assert "broken input: data/x.dcm" in err
