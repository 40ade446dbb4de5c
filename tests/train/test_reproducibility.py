"""Training is a function of its settings: separate processes agree bit for bit, thread counts are recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plaque.errors import InputError
from plaque.train.distributed import DistInfo
from plaque.train.trainer import fit, seed_everything
from tests.train.toy import ToyData, build, make_step, toy_config, toy_validate

ROOT = Path(__file__).resolve().parents[2]


def _toy_weights(out: Path, hash_seed: str) -> str:
    """Weights digest of a short toy run in a fresh process with ``PYTHONHASHSEED`` ``hash_seed``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tests.train.toy", "--out", str(out), "--report", str(out / "report")]
    subprocess.run([*command, "--max-epochs", "3"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    return json.loads((out / "report" / "result-rank0.json").read_text())["weights"]


@pytest.mark.slow
def test_separate_processes_give_bit_equal_weights(tmp_path: Path) -> None:
    assert _toy_weights(tmp_path / "a", "1") == _toy_weights(tmp_path / "b", "2")


def _fit_toy(out: Path, max_epochs: int) -> None:
    seed_everything(0)
    model, optimizer, tracker = build()
    cfg = toy_config(out, max_epochs=max_epochs)
    fit(model, optimizer, ToyData(32, 1), ToyData(8, 2), make_step(tracker), toy_validate, cfg, DistInfo(), tracker)


@pytest.mark.slow
def test_resume_under_another_cpu_thread_count_is_refused(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _fit_toy(tmp_path, 1)
        torch.set_num_threads(2)
        with pytest.raises(InputError, match="cpu_threads"):
            _fit_toy(tmp_path, 2)
    finally:
        torch.set_num_threads(threads)
