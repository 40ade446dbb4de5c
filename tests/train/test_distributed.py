"""The torchrun environment, the single-process fallbacks, and a real 2-process gloo run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from plaque.checkpoint import load_checkpoint
from plaque.errors import InputError
from plaque.train.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_object,
    gather_object,
    init_distributed,
    resolve_nproc,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_without_torchrun(no_torchrun_env):
    info = init_distributed(use_cuda=False)
    assert info == DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert info.is_main and not dist.is_initialized()
    assert broadcast_object({"a": 1}, info) == {"a": 1}
    assert gather_object("x", info) == ["x"]
    assert all_reduce_sum([1.0, 2.5], info) == [1.0, 2.5]


@pytest.mark.parametrize(
    "env, match",
    [
        ({"RANK": "one"}, "RANK"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 is not in a world of size 2"),
    ],
)
def test_malformed_environment(no_torchrun_env, env, match):
    for name, value in env.items():
        no_torchrun_env.setenv(name, value)
    with pytest.raises(InputError, match=match):
        init_distributed(use_cuda=False)


def test_resolve_nproc():
    assert resolve_nproc("auto") == (torch.cuda.device_count() or 1)
    assert resolve_nproc(3) == 3
    for bad in (0, -1, "4", True, 2.0):
        with pytest.raises(InputError, match="nproc_per_node"):
            resolve_nproc(bad)


def test_two_process_run_stops_together_and_only_rank0_writes(tmp_path):
    out, report = tmp_path / "run", tmp_path / "report"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "tests.train.toy",
        "--out",
        str(out),
        "--report",
        str(report),
        "--per-rank-dirs",
        "--max-epochs",
        "20",
        "--val-every",
        "1",
        "--patience",
        "2",
        "--batch",
        "4",
        "--scores",
        "0.2,0.5,0.5,0.4,0.9",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [json.loads((report / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:  # a plateau after the 2nd validation: both ranks stop after the 4th
        assert (r["epochs_run"], r["best_epoch"], r["best_score"], r["stopped_early"]) == (4, 2, 0.5, True)
        assert (r["world_size"], r["effective_batch_size"]) == (2, 8)
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["history"] == ranks[1]["history"]
    assert (ranks[0]["validate_calls"], ranks[1]["validate_calls"]) == (4, 0)

    assert not (out / "rank1").exists()
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["best.pt", "last.pt"]
    last = load_checkpoint(out / "ckpt" / "last.pt")
    assert last["epoch"] == 4 and last["early_stopping"]["stopped"] and len(last["rng"]) == 2
    assert not torch.equal(last["rng"][0]["torch"], last["rng"][1]["torch"])  # seeds offset by rank
    assert load_checkpoint(out / "ckpt" / "best.pt")["epoch"] == 2
    assert json.loads((out / "live" / "metrics.json").read_text())["val"]["score"] == 0.4
