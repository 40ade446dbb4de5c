"""Notebooks are committed clean: no outputs, a tagged parameters cell with smoke defaults, the project kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_stage_notebooks() -> None:
    assert [nb.name for nb in NOTEBOOKS][:2] == ["01_phantom.ipynb", "02_preprocess.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_parameterised(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged `parameters`"
    source = "".join(params[0]["source"])
    assert 'profile = "smoke"' in source, "smoke-sized defaults"
    for line in source.splitlines():
        if "_dir = " in line:
            assert '"scratch/' in line, f"default output must be a scratch folder: {line}"
    assert nb["metadata"]["kernelspec"]["name"] == "plaque"
