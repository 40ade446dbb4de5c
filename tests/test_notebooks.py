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


def test_the_evaluate_stage_makes_nothing_in_scratch_when_its_inputs_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as the DVC stage (predictions present), the evaluation notebook's set-up trains no scratch prior."""
    import plaque.paths
    import plaque.scratch

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(plaque.scratch, "_run", lambda root, *args: calls.append(args))
    monkeypatch.setattr(plaque.paths, "repo_root", lambda: tmp_path)  # scratch/ is tmp_path/scratch, empty
    (tmp_path / "pred" / "ours").mkdir(parents=True)
    (tmp_path / "processed").mkdir()
    nb = json.loads((NOTEBOOKS[0].parent / "06_evaluate.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    setup = next(i for i, source in enumerate(code) if "ensure_scratch(" in source)
    namespace: dict = {}
    exec(code[0], namespace)  # the parameters cell, then what the stage passes
    namespace.update(pred_dir=str(tmp_path / "pred"), data_dir=str(tmp_path / "processed"))
    for source in code[1 : setup + 1]:
        exec(source, namespace)
    assert calls == []
    (tmp_path / "scratch" / "processed").mkdir(parents=True)  # on its smoke defaults, without predictions:
    (tmp_path / "scratch" / "results" / "predictions").mkdir(parents=True)  # the prior, then those of ours
    namespace = {}
    for source in code[: setup + 1]:
        exec(source, namespace)
    assert [c[0] for c in calls] == ["plaque.train.stage1", "plaque.train.stage2"]
