"""The foundation stage: a SAM encoder pretrained by masked-image modelling on a cohort of its own, written in
SAM's checkpoint layout, loaded by every SAM-based method like official weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from plaque.config import load_config, resolve
from plaque.data.phantom import generate_cohort
from plaque.data.preprocess import preprocess
from plaque.errors import InputError
from plaque.io.patient import list_patients, load_patient
from plaque.models.build import build_model
from plaque.models.sam import build_image_encoder, load_sam_image_encoder
from plaque.paths import repo_root
from plaque.train.distributed import DistInfo
from plaque.train.foundation import SOURCE, train_foundation


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two patients each of the evaluation cohort (phantom.seed) and of the foundation cohort (foundation.seed),
    the latter preprocessed."""
    cfg = load_config(profile="smoke")
    work = tmp_path_factory.mktemp("foundation")
    generate_cohort(work / "eval", 2, seed=cfg["phantom"]["seed"], cfg=cfg["phantom"], processes=1)
    generate_cohort(work / "found", 3, seed=cfg["foundation"]["seed"], cfg=cfg["phantom"], processes=1)
    preprocess(work / "found", work / "processed", cfg["preprocess"], processes=1)
    return {"eval": work / "eval", "found": work / "found", "processed": work / "processed"}


def test_the_foundation_cohort_shares_no_patient_with_the_evaluation_cohort(cohorts: dict[str, Path]) -> None:
    cfg = load_config(profile="smoke")
    found = [load_patient(p, cfg["preprocess"]["label_map"]) for p in list_patients(cohorts["found"])]
    evaluation = [load_patient(p, cfg["preprocess"]["label_map"]) for p in list_patients(cohorts["eval"])]
    assert not {p.patient_id for p in found} & {p.patient_id for p in evaluation}
    assert not {p.study_uid for p in found} & {p.study_uid for p in evaluation}
    for a in found:  # and no image either: the same index under another seed is another patient
        assert all(a.hu.shape != b.hu.shape or not np.array_equal(a.hu, b.hu) for b in evaluation)


def test_the_two_cohorts_cannot_be_configured_to_coincide() -> None:
    raw = __import__("yaml").safe_load((repo_root() / "params.yaml").read_text())
    same = copy.deepcopy(raw)
    same["foundation"]["seed"] = same["phantom"]["seed"]
    with pytest.raises(InputError, match="foundation.seed"):
        resolve(same)


@pytest.mark.slow
def test_pretraining_writes_an_encoder_every_sam_method_loads(cohorts: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_config(profile="smoke")
    out, run, results = tmp_path / "models" / "foundation", tmp_path / "models" / "run", tmp_path / "results"
    result = train_foundation(cohorts["processed"], out, run, results, cfg, DistInfo())
    assert result.epochs_run == cfg["foundation"]["epochs"]
    (checkpoint,) = out.glob("sam_vit_tiny_*.pth")
    # the encoder's folder holds the encoder alone: what depends on it reruns only when its weights change
    assert {p.name for p in out.iterdir()} == {checkpoint.name, checkpoint.with_suffix(".json").name}
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt"}
    note = json.loads(checkpoint.with_suffix(".json").read_text())
    metrics = json.loads((results / "metrics.json").read_text())
    assert note["source"] == SOURCE == "phantom-simmim" and metrics["checkpoint"] == checkpoint.name
    assert note["cohort_seed"] == cfg["foundation"]["seed"] and np.isfinite(metrics["val_masked_l1"])
    fresh = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    load_sam_image_encoder(fresh, checkpoint, input_size=64, patch_size=4)  # digest and strict keys checked
    # every SAM-based method starts from it, and records it
    with_foundation = {**cfg, "stage2": {**cfg["stage2"], "weights": str(out)}}
    for method in ("ours", "cat_sam", "sam_lora"):
        model, weights = build_model(with_foundation, method, None if method != "ours" else _prior(tmp_path, cfg))
        assert weights == "phantom-simmim"
        loaded = {
            k.removeprefix("image_encoder."): v
            for k, v in model.state_dict().items()
            if k.startswith("image_encoder.") and "lora_" not in k
        }
        assert all(torch.equal(loaded[k], v) for k, v in fresh.state_dict().items()), method


def _prior(tmp_path: Path, cfg: dict) -> Path:
    """An untrained but valid Stage-1 checkpoint."""
    from plaque.checkpoint import save_atomic
    from plaque.models.vq import build_vq

    path = tmp_path / "prior" / "best.pt"
    save_atomic({"format": 1, "epoch": 1, "model": build_vq(cfg["stage1"]).state_dict()}, path)
    return path
