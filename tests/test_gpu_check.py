"""benchmarks/gpu_check.sh refuses bad options before doing anything (its runs are measured on a GPU, not here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def gpu_check(*args: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True, timeout=60)


def test_help_describes_both_environments(tmp_path: Path) -> None:
    done = gpu_check("--help", out=tmp_path)
    assert done.returncode == 0
    assert "--python PYTHON" in done.stdout and "gpu_wheels.txt" in done.stdout and "--venv VENV" in done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--python", "/no/such/python"], "--python /no/such/python: no such interpreter"),
        (["--python", "python3", "--wheels", "/no/such/folder"], "--wheels /no/such/folder: no such folder"),
        (["--device", "tpu"], "--device must be cuda or cpu"),
        (["--ddp", "sometimes"], "--ddp must be auto, always or never"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_bad_options_stop_it_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    done = gpu_check(*args, out=out)
    assert done.returncode == 2 and message in done.stderr
    assert not (out / "summary.txt").exists()
