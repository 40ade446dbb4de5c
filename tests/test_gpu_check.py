"""benchmarks/gpu_check.sh refuses bad options before doing anything (its runs are measured on a GPU, not here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def gpu_check(
    *args: str, out: Path, env: dict[str, str] | None = None, timeout: int = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def test_help_describes_both_environments(tmp_path: Path) -> None:
    done = gpu_check("--help", out=tmp_path)
    assert done.returncode == 0
    assert "--python PYTHON" in done.stdout and "gpu_wheels.txt" in done.stdout and "--venv VENV" in done.stdout
    assert "--pipeline PROFILES" in done.stdout and "gpu_pipeline_wheels.txt" in done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--python", "/no/such/python"], "--python /no/such/python: no such interpreter"),
        (["--python", "python3", "--wheels", "/no/such/folder"], "--wheels /no/such/folder: no such folder"),
        (["--device", "tpu"], "--device must be cuda or cpu"),
        (["--ddp", "sometimes"], "--ddp must be auto, always or never"),
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--levers", "--pipeline", "demo"], "--levers and --pipeline are separate runs"),
        (["--site", "/tmp/site"], "--site goes with --python"),
        (["--pipeline", "demo;paper"], "--pipeline takes profile names separated by commas"),
    ],
)
def test_bad_options_stop_it_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    done = gpu_check(*args, out=out)
    assert done.returncode == 2 and message in done.stderr
    assert not (out / "summary.txt").exists()


def test_levers_table_keeps_the_runs_that_ran_and_reports_the_one_that_failed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = "baseline --batch-size 2\nbroken --attention nonsense\nunfused --batch-size 2 --adamw default"
    done = gpu_check(
        "--device",
        "cpu",
        "--profile",
        "smoke",
        "--levers",
        "--steps",
        "1",
        out=out,
        env={"LEVER_RUNS": runs},
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "lever run broken: FAILED" in done.stdout
    rows = [line.split() for line in (out / "levers.txt").read_text().splitlines()[2:]]
    assert [r[:5] for r in rows] == [
        ["baseline", "2", "folded", "fused", "eager"],
        ["unfused", "2", "folded", "default", "eager"],
    ]
    assert "levers: FAILED (exit 1)" in (out / "summary.txt").read_text()
    assert not (out / "benchmarks.json").exists()  # --levers runs the lever table alone
