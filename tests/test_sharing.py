"""Sharing models and data: a DVC remote round trip (the README's recipe), and the Makefile's choices for other
machines (the PyTorch build, running as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


def dvc(*args: str, cwd: Path) -> str:
    return subprocess.run([DVC, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_a_trained_model_goes_to_a_remote_and_comes_back(tmp_path: Path) -> None:
    """`dvc remote add`, `dvc push`, then on a machine without it `dvc pull`: the same bytes come back."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    (repo / "models" / "stage2" / "ours").mkdir(parents=True)
    model = repo / "models" / "stage2" / "ours" / "best.pt"
    model.write_bytes(os.urandom(4096))
    dvc("init", "--no-scm", "-q", cwd=repo)
    dvc("add", "-q", "models/stage2/ours", cwd=repo)
    dvc("remote", "add", "-d", "shared", str(remote), cwd=repo)
    dvc("push", "-q", cwd=repo)
    assert any(p.is_file() for p in remote.rglob("*"))
    original = model.read_bytes()
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(model.parent)  # the model and the cache are gone; models/stage2/ours.dvc (in git) stays
    dvc("pull", "-q", cwd=repo)
    assert model.read_bytes() == original


def make_dry_run(*args: str) -> str:
    """What ``make`` would run (``-n``), pretending pyproject.toml changed so that set-up is replanned."""
    done = subprocess.run(["make", "-n", "-W", "pyproject.toml", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_pytorch_build_can_be_chosen_and_the_default_stays() -> None:
    chosen = make_dry_run("setup", "TORCH_INDEX=https://download.pytorch.org/whl/cu126")
    line = next(x for x in chosen.splitlines() if "pins.py torch torchvision" in x)
    assert "--index-url https://download.pytorch.org/whl/cu126" in line
    default = next(x for x in make_dry_run("setup").splitlines() if "pins.py torch torchvision" in x)
    assert "--index-url" not in default


@pytest.mark.skipif(shutil.which("make") is None or os.geteuid() != 0, reason="needs make, run as root")
def test_lab_allows_root_in_containers() -> None:
    lab = next(x for x in make_dry_run("lab").splitlines() if "jupyter lab" in x)
    assert lab.rstrip().endswith("--allow-root")
