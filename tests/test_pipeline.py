"""dvc.yaml is what `plaque.pipeline` writes: one stage per prior variant and method, each depending on exactly
the code its notebook and command load, the params it reads and the data it uses."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plaque.config import load_config
from plaque.errors import InputError
from plaque.pipeline import dvc_yaml, first_difference, stages

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def written() -> str:
    """What `python -m plaque.pipeline` would write now (it runs every stage's imports in a fresh interpreter)."""
    return dvc_yaml(ROOT)


@pytest.mark.slow
def test_the_committed_dvc_yaml_is_current(written: str) -> None:
    """A stage whose notebook or command starts loading another module, a new method, a changed profile: all of
    them change what the pipeline writes, and this catches the committed file lagging behind."""
    assert first_difference((ROOT / "dvc.yaml").read_text(), written) is None, "run `make pipeline`"


@pytest.mark.slow
def test_a_dependency_missing_from_dvc_yaml_is_caught(written: str) -> None:
    dropped = written.replace("    - plaque/models/faa.py\n", "", 1)
    assert first_difference(dropped, written) == "+    - plaque/models/faa.py"


@pytest.mark.slow
def test_each_stage_depends_on_the_code_it_loads_and_no_other(written: str) -> None:
    deps = {name: set(stage["deps"]) for name, stage in yaml.safe_load(written)["stages"].items()}
    loading = {
        module: sorted(name for name, d in deps.items() if module in d)
        for module in (
            "plaque/models/faa.py",
            "plaque/models/cat_sam.py",
            "plaque/baselines/nnunet/run.py",
            "plaque/models/vq.py",
            "plaque/eval/metrics.py",
            "plaque/classes.py",
            "plaque/models/vessel.py",
        )
    }
    assert loading["plaque/models/faa.py"] == ["stage2-ours", "stage2-ours_head", "stage2-ours_no_contrastive"]
    assert loading["plaque/models/cat_sam.py"] == ["stage2-cat_sam"]
    assert loading["plaque/baselines/nnunet/run.py"] == ["nnunet"]
    assert (
        "stage2-sam_lora" not in loading["plaque/models/vq.py"]
        and "stage1-contrastive" in loading["plaque/models/vq.py"]
    )
    assert loading["plaque/eval/metrics.py"] == ["evaluate"]
    assert loading["plaque/models/vessel.py"] == ["vessel"]  # segmenting uses it; no training stage but its own
    assert {"data/raw", "data/processed"} <= deps["vessel"]
    assert set(loading["plaque/classes.py"]) == set(deps)  # the class map: every stage
    assert "plaque/eval/__main__.py" in deps["evaluate"]  # `-m plaque.eval` runs the package's __main__
    assert "plaque/data/phantom/__main__.py" in deps["phantom"]
    assert "models/stage1/no_contrastive" in deps["stage2-ours_no_contrastive"]
    assert not any(d.startswith("models/stage1") for d in deps["stage2-sam_lora"] | deps["nnunet"])


def test_params_lists_drive_the_stages() -> None:
    cfg = load_config(ROOT / "params.yaml")
    names = list(stages(cfg))
    assert [n for n in names if n.startswith("stage1-")] == [f"stage1-{v}" for v in cfg["priors"]]
    assert {n.removeprefix("stage2-") for n in names if n.startswith("stage2-")} | {"nnunet"} == set(cfg["methods"])
    assert names[:3] == ["phantom", "preprocess", "stage1-contrastive"] and names[-1] == "evaluate"
    fewer = copy.deepcopy(cfg)
    fewer["methods"], fewer["priors"] = ["ours", "no_prior"], ["contrastive"]
    fewer["stage2"]["weights"] = "models/foundation"
    assert list(stages(fewer)) == [
        "phantom",
        "preprocess",
        "foundation",
        "stage1-contrastive",
        "stage2-ours",
        "stage2-no_prior",
        "vessel",
        "evaluate",
    ]
    assert [d for d in stages(cfg)["evaluate"].deps if d.startswith("results/stage1/")] == [
        "results/stage1/contrastive/metrics.json",
        "results/stage1/no_contrastive/metrics.json",
    ]  # the evaluation reports the LPIPS backbone of each prior a method reads
    assert [d for d in stages(fewer)["evaluate"].deps if d.startswith("results/stage1/")] == [
        "results/stage1/contrastive/metrics.json"
    ]
    no_sam = copy.deepcopy(fewer)
    no_sam["methods"] = ["nnunet"]
    assert "foundation" not in stages(no_sam)  # nothing needs a pretrained encoder


def test_a_random_encoder_needs_no_checkpoint_and_no_foundation() -> None:
    demo = load_config(ROOT / "params.yaml", "demo")
    assert demo["stage2"]["weights"] == "random"
    planned = stages(demo)
    assert "foundation" not in planned
    assert planned["stage2-ours"].deps == ["data/processed", "models/stage1/contrastive"]
    assert planned["stage2-sam_lora"].deps == ["data/processed"]
    pretrained = copy.deepcopy(demo)
    pretrained["stage2"]["weights"] = "models/foundation/"
    assert "models/foundation" in stages(pretrained)["stage2-sam_lora"].deps


def test_only_the_foundation_folder_itself_makes_the_foundation_stage_a_dependency() -> None:
    cfg = load_config(ROOT / "params.yaml", "demo")
    cfg["stage2"]["weights"] = "models/foundation/encoder.pt"
    assert stages(cfg)["stage2-sam_lora"].deps == ["data/processed", "models/foundation"]
    cfg["stage2"]["weights"] = "models/foundation_mine/encoder.pt"  # a sibling that merely shares the prefix
    planned = stages(cfg)
    assert "foundation" not in planned
    assert planned["stage2-sam_lora"].deps == ["data/processed", "models/foundation_mine/encoder.pt"]


def test_official_weights_are_a_declared_dependency_and_need_no_foundation() -> None:
    paper = load_config(ROOT / "params.yaml", "paper")
    planned = stages(paper)
    assert "foundation" not in planned
    assert "models/pretrained/sam_vit_b_01ec64.pth" in planned["stage2-ours"].deps
    assert "models/pretrained/sam_vit_b_01ec64.pth" not in planned["nnunet"].deps


def test_checkpoint_folders_persist_so_an_interrupted_training_resumes() -> None:
    cfg = load_config(ROOT / "params.yaml")
    cfg["stage2"]["weights"] = "models/foundation"
    planned = stages(cfg)
    assert planned["stage2-ours"].persist == ["models/stage2/ours"]
    assert planned["stage1-contrastive"].persist == ["models/stage1/contrastive"]
    # the foundation run resumes from its own folder; the encoder's folder is rewritten whole
    assert planned["foundation"].persist == ["models/foundation_run"]
    assert "models/foundation" in planned["foundation"].outs


@pytest.mark.slow
def test_dvc_reads_the_pipeline(tmp_path: Path, written: str) -> None:
    (tmp_path / "dvc.yaml").write_text(written)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    done = subprocess.run(
        [DVC, "stage", "list", "--name-only"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == list(yaml.safe_load(written)["stages"])


def test_own_cohort_replaces_the_phantom_stage() -> None:
    cfg = load_config(ROOT / "params.yaml")
    cfg["data"]["raw"] = "data/cohort"
    planned = stages(cfg)
    assert "phantom" not in planned
    assert planned["preprocess"].deps == ["data/cohort"]
    assert planned["preprocess"].parameters["raw_dir"] == "data/cohort"
    assert stages(load_config(ROOT / "params.yaml"))["preprocess"].deps == ["data/raw"]


def test_own_cohort_must_be_given_relative_to_the_repository(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["raw"] = "/home/someone/cohort"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(InputError, match="relative to the repository"):
        load_config(tmp_path / "params.yaml")
