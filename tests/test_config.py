"""params.yaml holds the paper's numbers; profiles only change compute scale; bad keys are named."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from plaque import config
from plaque.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())

# Every number of the paper's appendix, at its key path.
PAPER = {
    "stage1.codebook_size": 1024,
    "stage1.latent_dim": 32,
    "stage1.loss.l1": 1.0,
    "stage1.loss.perceptual": 1.0,
    "stage1.loss.commit": 0.25,
    "stage1.loss.contrastive": 5.0,
    "stage1.loss.temperature": 0.1,
    "stage1.contrastive.samples_per_class": 2048,
    "stage1.optim.lr": 2.0e-4,
    "stage1.optim.betas": [0.5, 0.999],
    "stage2.faa.heads": 4,
    "stage2.faa.dropout": 0.1,
    "stage2.prior.adapter_kernel": 1,
    "stage2.loss.ce": 1.0,
    "stage2.loss.dice": 1.0,
    "stage2.optim.lr": 1.0e-4,
    "stage2.optim.weight_decay": 1.0e-4,
    "train.batch_size_per_gpu": 8,
    "train.max_epochs": 100,
    "train.val_every": 5,
    "train.patience": 6,
    "augment.rotation_p": 0.5,
}


def get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("profile", sorted(RAW["profiles"]))
def test_paper_numbers_survive_every_profile(profile: str) -> None:
    cfg = config.resolve(copy.deepcopy(RAW), profile)
    for key, value in PAPER.items():
        if key == "train.max_epochs" or key == "train.val_every":
            continue  # epoch budget and validation cadence are compute scale
        assert get(cfg, key) == value, key


def test_paper_profile_is_the_paper_setting() -> None:
    cfg = config.resolve(copy.deepcopy(RAW), "paper")
    for key, value in PAPER.items():
        assert get(cfg, key) == value, key
    assert cfg["stage2"]["backbone"] == "vit_b"
    assert cfg["stage2"]["input_size"] == 1024


def test_default_profile_is_demo_and_overrides_apply() -> None:
    cfg = config.resolve(copy.deepcopy(RAW))
    assert cfg["profile"] == "demo"
    assert "profiles" not in cfg
    for section, values in RAW["profiles"]["demo"].items():
        for key, value in values.items():
            assert cfg[section][key] == value


def test_profile_keys_exist_in_the_schema() -> None:
    for dotted in config.PROFILE_KEYS:
        assert dotted.split(".")[0] in config.PROFILE_SECTIONS
        assert config._schema_at(dotted) is not None, dotted


@pytest.mark.parametrize(
    ("edit", "where", "problem"),
    [
        (lambda r: r["stage1"].__setitem__("codebook_sise", 1024), "stage1.codebook_sise", "unknown key"),
        (lambda r: r["stage1"]["loss"].pop("commit"), "stage1.loss.commit", "missing key"),
        (
            lambda r: r["train"].__setitem__("batch_size_per_gpu", "8"),
            "train.batch_size_per_gpu",
            "expected an integer",
        ),
        (
            lambda r: r["train"].__setitem__("batch_size_per_gpu", 8.5),
            "train.batch_size_per_gpu",
            "expected an integer",
        ),
        (lambda r: r["stage2"]["faa"].__setitem__("dropout", 1.5), "stage2.faa.dropout", "out of range"),
        (lambda r: r["augment"].__setitem__("rotation_p", True), "augment.rotation_p", "expected a number"),
        (lambda r: r["stage1"]["optim"].__setitem__("betas", [0.5]), "stage1.optim.betas", "expected 2 items"),
        (
            lambda r: r["preprocess"].__setitem__("split", {"train": 0.5, "val": 0.2, "test": 0.2}),
            "preprocess.split",
            "sum to 1.0",
        ),
        (lambda r: r["preprocess"].__setitem__("window_hu", [500.0, -100.0]), "preprocess.window_hu", "increasing"),
        (lambda r: r["preprocess"]["label_map"].__setitem__(7, 9), "preprocess.label_map.7", "out of range"),
        (lambda r: r["stage2"].__setitem__("decoder", "unet"), "stage2.decoder", "not one of"),
        (
            lambda r: r["stage1"]["codebook"].__setitem__("reseed_dead", 1),
            "stage1.codebook.reseed_dead",
            "true or false",
        ),
        (lambda r: r["train"].__setitem__("nproc_per_node", "many"), "train.nproc_per_node", "expected an integer"),
        (lambda r: r["phantom"].__setitem__("processes", "all"), "phantom.processes", "expected an integer"),
        (lambda r: r["preprocess"].__setitem__("processes", 0), "preprocess.processes", "out of range"),
        (
            lambda r: r["profiles"]["demo"]["train"].__setitem__("seed", 2),
            "profiles.demo.train.seed",
            "not a compute-scale key",
        ),
        (
            lambda r: r["profiles"]["demo"]["train"].__setitem__("max_epoch", 3),
            "profiles.demo.train.max_epoch",
            "unknown key",
        ),
        (
            lambda r: r["profiles"]["demo"]["train"].__setitem__("max_epochs", 0),
            "profiles.demo.train.max_epochs",
            "out of range",
        ),
        (
            lambda r: r["profiles"]["demo"].__setitem__("stage1", {"loss": {"l1": 2.0}}),
            "profiles.demo",
            "exactly the sections",
        ),
        (lambda r: r["profiles"]["paper"].pop("train"), "profiles.paper", "exactly the sections"),
        (lambda r: r.__setitem__("profile", "fast"), "profile", "unknown profile 'fast'"),
        (lambda r: r["nnunet"].__setitem__("epochs", 0), "nnunet.epochs", "out of range"),
        (lambda r: r["nnunet"].__setitem__("checkpoint", "latest"), "nnunet.checkpoint", "not one of"),
        (lambda r: r["nnunet"].__setitem__("color", 1), "nnunet.color", "unknown key"),
        (
            lambda r: r["train"].__setitem__("samples_per_epoch", "most"),
            "train.samples_per_epoch",
            "expected an integer",
        ),
    ],
)
def test_bad_params_name_the_key(edit, where: str, problem: str) -> None:
    raw = copy.deepcopy(RAW)
    edit(raw)
    with pytest.raises(InputError, match=problem) as info:
        config.resolve(raw)
    assert info.value.where == where


def test_worker_processes_auto_is_this_process_cores_and_a_number_stays() -> None:
    assert config.worker_processes("auto") == len(os.sched_getaffinity(0))
    assert config.worker_processes(3) == 3
    for bad in (0, True, "all", 2.0):
        with pytest.raises(InputError, match="positive integer or 'auto'"):
            config.worker_processes(bad)


def test_cli_prints_resolved_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert config.main(["--profile", "paper"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "paper"
    assert out["stage1"]["codebook_size"] == 1024


def test_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = copy.deepcopy(RAW)
    raw["train"]["patience"] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert config.main(["--params", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert str(bad) in err and "train.patience" in err and "out of range" in err


def test_environment_yml_uses_pyproject_pins() -> None:
    import subprocess
    import sys

    pins = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pins.py"), "torch", "torchvision"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section[:2] == pins
    assert "-e .[dev]" in pip_section


def test_repo_root_found_from_notebooks_and_from_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plaque.paths import repo_root

    assert repo_root(ROOT / "notebooks") == ROOT
    monkeypatch.chdir(tmp_path)  # outside any checkout: falls back to the package's own
    assert repo_root() == ROOT
    with pytest.raises(FileNotFoundError, match="no plaque repository"):
        repo_root(tmp_path)


def test_missing_params_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="params file not found"):
        config.load_config(tmp_path / "nope.yaml")
