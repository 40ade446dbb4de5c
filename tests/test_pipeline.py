"""dvc.yaml: params' `methods` and `priors` lists drive the per-method and per-variant stages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
