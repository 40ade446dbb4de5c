"""dvc.yaml: params' `methods` and `priors` lists drive the per-method and per-variant stages, and every
`plaque` module a stage runs is one of its deps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


def stage_names(folder: Path) -> list[str]:
    """The stage names `dvc stage list` reads from ``folder``'s dvc.yaml and params.yaml."""
    done = subprocess.run([DVC, "stage", "list", "--name-only"], cwd=folder, capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def test_adding_a_name_to_methods_or_priors_adds_a_stage(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    names = stage_names(tmp_path)
    assert [n for n in names if n.startswith("stage2@")] == [f"stage2@{m}" for m in params["methods"]]
    assert [n for n in names if n.startswith("stage1@")] == [f"stage1@{v}" for v in params["priors"]]
    assert "stage2@nnunet" in names and "stage2@cat_sam" in names

    params["methods"] = ["ours", "no_prior"]
    params["priors"] = ["contrastive"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    names = stage_names(tmp_path)
    assert [n for n in names if "@" in n] == ["stage1@contrastive", "stage2@ours", "stage2@no_prior"]


def notebook_modules(notebook: Path) -> set[str]:
    """The `plaque` modules a notebook's code imports or names (``python -m plaque.x``, ``"plaque.x"``),
    with the modules of `plaque.methods.EXTERNAL_METHODS` when it imports `plaque.methods`."""
    code = "\n".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]
                     if cell["cell_type"] == "code")
    names = set(re.findall(r"\bplaque(?:\.[a-z_0-9]+)+", code))
    if "plaque.methods" in names:
        from plaque.methods import EXTERNAL_METHODS
        names |= set(EXTERNAL_METHODS.values())
    return names


def imported_files(modules: set[str]) -> set[str]:
    """Repository-relative files of every `plaque` module loaded by importing ``modules`` in a fresh interpreter."""
    script = ("import importlib, sys\n"
              f"for name in {sorted(modules)!r}:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except ModuleNotFoundError:\n"
              "        importlib.import_module(name.rpartition('.')[0])  # a name like plaque.x.attribute\n"
              "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items())\n"
              "                 if n.split('.')[0] == 'plaque' and getattr(m, '__file__', None)))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return {Path(f).resolve().relative_to(ROOT).as_posix() for f in done.stdout.split()}


def stage_deps() -> dict[str, list[str]]:
    """Each dvc.yaml stage's deps (a ``foreach`` stage's ``do`` section)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (stage.get("do", stage))["deps"] for name, stage in stages.items()}


@pytest.mark.parametrize("stage", sorted(stage_deps()))
def test_every_module_a_stage_runs_is_one_of_its_deps(stage: str) -> None:
    """A change to any `plaque` module a stage's notebook loads must invalidate the stage (packages'
    ``__init__.py`` aside)."""
    deps = stage_deps()[stage]
    notebooks = [d for d in deps if d.endswith(".ipynb")]
    assert len(notebooks) == 1, f"{stage}: expected one notebook among the deps"
    files = imported_files(notebook_modules(ROOT / notebooks[0]))
    assert any(f.startswith("plaque/") for f in files)
    missing = sorted(f for f in files if Path(f).name != "__init__.py"
                     and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"{stage}: dvc.yaml lacks these deps: {missing}"
