"""Stage-1 end to end on a tiny phantom cohort: checkpoints, metrics, the frozen encoder Stage-2 will use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plaque.checkpoint import load_checkpoint
from plaque.config import load_config
from plaque.data.phantom import generate_cohort
from plaque.data.preprocess import preprocess
from plaque.losses.perceptual import Perceptual
from plaque.models.vq import build_vq, freeze
from plaque.train.distributed import DistInfo
from plaque.train.stage1 import main, train_stage1


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(profile="smoke")
    work = tmp_path_factory.mktemp("stage1")
    generate_cohort(work / "raw", 3, seed=7, cfg=cfg["phantom"], processes=1)
    preprocess(work / "raw", work / "processed", cfg["preprocess"], processes=1)
    return work / "processed"


@pytest.mark.filterwarnings("ignore:LPIPS trunk weights not found")
def test_stage1_trains_and_writes_what_stage2_needs(processed: Path, tmp_path: Path) -> None:
    cfg = load_config(profile="smoke")
    result = train_stage1(processed, tmp_path / "models", tmp_path / "results", cfg, DistInfo())
    assert result.epochs_run == cfg["train"]["max_epochs"]
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["perceptual_backbone"] == Perceptual(cfg["stage1"]["perceptual"]["net"]).backbone
    assert metrics["monitor"] == "probe_dice" and 0.0 <= metrics["score"] <= 1.0
    assert 0.0 < metrics["codes_used"] <= 1.0 and metrics["perplexity"] >= 1.0
    assert metrics["world_size"] == 1 and metrics["epochs_run"] == result.epochs_run
    history = load_checkpoint(tmp_path / "models" / "last.pt")["history"]
    assert history[-1]["train/l1"] < history[0]["train/l1"]  # reconstruction improves
    # the best checkpoint rebuilds the frozen prior with the configured codebook
    model = freeze(build_vq(cfg["stage1"]))
    model.load_state_dict(load_checkpoint(tmp_path / "models" / "best.pt")["model"])
    z_q, idx = model.encode(torch.rand(2, 1, 64, 64))
    side = 64 // cfg["stage1"]["downsample"]
    assert z_q.shape == (2, cfg["stage1"]["latent_dim"], side, side) and int(idx.max()) < cfg["stage1"]["codebook_size"]
    assert (tmp_path / "results" / "live").is_dir()


def test_cli_reports_bad_data_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "m"),
            "--results",
            str(tmp_path / "r"),
            "--profile",
            "smoke",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "missing" in err and "\n" not in err
    assert not (tmp_path / "r" / "metrics.json").exists()
