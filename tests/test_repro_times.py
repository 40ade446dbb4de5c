"""benchmarks.repro_times: the profile it sets in its clone, the GPU memory it samples per stage, and its table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from benchmarks.repro_times import PeakGpuMemory, clone, repro_env, repro_lines, set_profile

ROOT = Path(__file__).resolve().parents[1]


def replay(
    samples: list[list[int] | None],
) -> tuple[Callable[[], None], Callable[[], list[int] | None]]:
    """A wait until ``samples`` are used up, and a memory reader that returns them in turn, then the last again."""
    calls = {"n": 0}

    def read() -> list[int] | None:
        calls["n"] += 1
        return samples[min(calls["n"], len(samples)) - 1]

    def wait() -> None:
        deadline = time.monotonic() + 10
        while calls["n"] < len(samples) and time.monotonic() < deadline:
            time.sleep(0.001)

    return wait, read


def test_peak_memory_is_the_largest_rise_on_any_one_gpu() -> None:
    # GPU 0 rises by 300 MiB at most, GPU 1 by 700: neither the total's rise (750) nor the use (900) is the peak
    wait, read = replay([[100, 200], [400, 300], [150, 900], [100, 250]])
    with PeakGpuMemory(read, interval=0.001) as memory:
        wait()
    assert memory.peak_mib == 700


def test_peak_memory_counts_a_rise_seen_only_at_the_end() -> None:
    # no sample falls inside the block: the reading on exit alone sees the rise
    _, read = replay([[1000], [1600]])
    with PeakGpuMemory(read, interval=60) as memory:
        pass
    assert memory.peak_mib == 600


def test_no_gpu_means_no_memory_figure_and_no_sampling() -> None:
    calls = []
    with PeakGpuMemory(lambda: calls.append(1), interval=0.001) as memory:
        time.sleep(0.02)
    assert memory.peak_mib is None and len(calls) == 1


def report(gpu: list[int | None]) -> dict:
    stages = [
        {"stage": s, "seconds": 1.5, "gpu_peak_mib": m, "returncode": 0} for s, m in zip(("phantom", "stage1"), gpu)
    ]
    return {"commit": "a" * 40, "profile": "paper_smoke", "stages": stages, "total_s": 3.0, "ok": True}


def test_table_has_a_gpu_column_only_where_memory_was_measured() -> None:
    with_gpu = repro_lines(report([0, 2048]))
    assert "profile paper_smoke" in with_gpu[0] and "GPU peak MiB" in with_gpu[1]
    assert with_gpu[1].splitlines()[3].split() == ["stage1", "1.5", "2048", "0"]
    without = repro_lines(report([None, None]))
    assert "GPU" not in without[1] and without[1].splitlines()[2].split() == ["phantom", "1.5", "0"]


@pytest.mark.slow
def test_profile_is_set_in_the_clone_and_its_pipeline_rewritten(tmp_path: Path) -> None:
    work = clone(ROOT, tmp_path)
    env = repro_env(work)
    set_profile(work, "paper_smoke", env)
    params = (work / "params.yaml").read_text()
    assert yaml.safe_load(params)["profile"] == "paper_smoke"
    (line,) = [x for x in params.splitlines() if x.startswith("profile:")]
    assert line.startswith("profile: paper_smoke ") and "# demo:" in line  # the comment kept
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert "profiles.paper_smoke.train" in stages["stage2-ours"]["params"]
    assert "models/pretrained" not in str(stages["stage2-ours"]["deps"])  # random weights: no checkpoint to need
    with pytest.raises(SystemExit, match=r"--profile nonsense: .*params.yaml has the profiles \['demo', 'paper'"):
        set_profile(work, "nonsense", env)


def test_the_stages_python_is_the_running_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the running interpreter is named python3.x in a folder without a `python`, and marks what it runs
    interpreter = tmp_path / "interpreter" / "python3.x"
    interpreter.parent.mkdir()
    interpreter.write_text(f'#!/bin/sh\nRUN_BY_US=yes exec "{sys.executable}" "$@"\n')
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    work = tmp_path / "clone"
    work.mkdir()
    env = repro_env(work)
    stage = "python -c 'import os; print(os.environ.get(\"RUN_BY_US\"))'"
    done = subprocess.run(["sh", "-c", stage], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "yes", done.stderr
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(work)
