"""dvc.yaml, written from params.yaml and the method registry, with each stage's code dependencies derived.

    python -m plaque.pipeline            write dvc.yaml for params.yaml as it is (`make pipeline`; `make demo`
                                         runs it first)
    python -m plaque.pipeline --check    exit 1, naming the first difference, when dvc.yaml is not what it
                                         would write (a test runs this)

Stages: ``phantom`` (only where ``data.raw`` is ``phantom``; else the user's folder is a DVC-tracked input) →
``preprocess`` → ``foundation`` (where ``stage2.weights`` is its folder) → ``stage1-<variant>`` (one per entry of ``priors``) →
``stage2-<method>`` (one per entry of ``methods`` trained by our Stage-2 trainer) and ``<method>`` for an
external method (``nnunet``) → ``evaluate``; beside them ``vessel`` (after ``preprocess``: the vessel model
that `plaque.segment` uses on scans without a centerline). Every stage runs its notebook through `plaque.notebook`.

Exact dependencies, so that a stage reruns when, and only when, something it uses changes:

- code: the ``plaque`` files its notebook and command load, found by running them in a fresh interpreter
  (`loaded_files`): the notebook's imports, the module each ``python -m`` runs (``X/__main__.py`` for a
  package), and for a method the network the registry builds for it (`plaque.models.build.build_model`)
  and its predictor's module. A method's stage therefore depends on its own model code and not the others'.
- params: the sections and keys the stage reads, and the profile's overrides of them that exist.
- data: the outputs of the stages before it that it reads: a prior method its Stage-1 variant alone; a
  SAM-based method the checkpoint ``stage2.weights`` names (the foundation stage's folder, or the official
  file under ``models/pretrained/``, which is then a declared dependency).

Changing ``profile``, ``methods`` or ``priors`` changes the stages: run this again (``make pipeline``).
Checkpoint folders are ``persist`` outputs, so that an interrupted training resumes under ``dvc repro``
(`plaque.train.trainer.fit` resumes only a ``last.pt`` of the same code and settings).
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plaque.cli import run_cli
from plaque.config import PHANTOM, PROFILE_SECTIONS, RANDOM_WEIGHTS, load_config
from plaque.errors import InputError
from plaque.methods import get_method
from plaque.paths import repo_root

DVC_FILE = "dvc.yaml"
HEADER = (
    "# Written by `python -m plaque.pipeline` from params.yaml and the method registry; do not edit.\n"
    "# Each stage runs its notebook through `python -m plaque.notebook` (executed copy and log under\n"
    "# reports/notebooks/); its plaque deps are the files its notebook and command load.\n"
)
FOUNDATION_DIR = "models/foundation"
FOUNDATION_RUN_DIR = "models/foundation_run"  # the MIM run's best.pt and last.pt, apart from the encoder
PHANTOM_RAW = "data/raw"  # where the phantom stage writes the built-in cohort


@dataclass
class Stage:
    """One stage before its code dependencies are known.

    Attributes:
        notebook: the notebook it runs (under ``notebooks/``), ``executed``: the executed copy's name.
        parameters: the notebook parameters it passes (besides ``profile``).
        modules: the modules its notebook runs with ``python -m``.
        method: the method whose network and predictor it loads, if any.
        params: the params sections and dotted keys it reads.
        deps: data it reads; outs, persist (outs kept across reruns), metrics, plots: what it writes.
    """

    notebook: str
    executed: str
    parameters: dict[str, str]
    modules: list[str]
    params: list[str]
    deps: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    persist: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    method: str | None = None


def weights_dependency(cfg: dict[str, Any]) -> str | None:
    """The data dependency of a SAM-based method on its encoder's checkpoint (``stage2.weights``, resolved):
    ``None`` for a randomly initialised encoder (``random``)."""
    weights = cfg["stage2"]["weights"]
    if weights == RANDOM_WEIGHTS:
        return None
    path = Path(weights)
    return FOUNDATION_DIR if path == Path(FOUNDATION_DIR) or Path(FOUNDATION_DIR) in path.parents else weights


def raw_folder(cfg: dict[str, Any]) -> str:
    """The raw cohort the ``preprocess`` stage reads: the phantom stage's ``data/raw`` or ``data.raw``."""
    return PHANTOM_RAW if cfg["data"]["raw"] == PHANTOM else Path(cfg["data"]["raw"]).as_posix().rstrip("/")


def stages(cfg: dict[str, Any]) -> dict[str, Stage]:
    """Every stage of the resolved configuration ``cfg``, in pipeline order."""
    sam_methods = any(not get_method(m).external for m in cfg["methods"])
    raw = raw_folder(cfg)
    out: dict[str, Stage] = {
        "phantom": Stage(
            "01_phantom.ipynb",
            "01_phantom.ipynb",
            {"out_dir": PHANTOM_RAW},
            ["plaque.data.phantom"],
            ["phantom"],
            outs=[PHANTOM_RAW],
        ),
        "preprocess": Stage(
            "02_preprocess.ipynb",
            "02_preprocess.ipynb",
            {"raw_dir": raw, "out_dir": "data/processed"},
            ["plaque.data.preprocess"],
            ["data", "preprocess"],
            deps=[raw],
            outs=["data/processed"],
        ),
        "foundation": Stage(
            "03_foundation.ipynb",
            "03_foundation.ipynb",
            {
                "data_dir": "data/foundation",
                "model_dir": FOUNDATION_DIR,
                "run_dir": FOUNDATION_RUN_DIR,
                "results_dir": "results/foundation",
            },
            ["plaque.data.phantom", "plaque.data.preprocess", "plaque.train.foundation"],
            [
                "phantom",
                "preprocess",
                "foundation",
                "augment",
                "train.num_workers",
                "train.val_stride",
                "stage2.backbone",
                "stage2.input_size",
                "stage2.patch_size",
                "stage2.weights",
            ],
            outs=["data/foundation", FOUNDATION_DIR],
            persist=[FOUNDATION_RUN_DIR],
            metrics=["results/foundation/metrics.json"],
            plots=["results/foundation/live/plots/metrics"],
        ),
    }
    if raw != PHANTOM_RAW:
        del out["phantom"]  # the user's cohort, a DVC-tracked input (`dvc add`)
    encoder = weights_dependency(cfg)
    if not sam_methods or encoder != FOUNDATION_DIR:
        del out["foundation"]  # official SAM weights, a random encoder or no SAM-based method: nothing to pretrain
    for variant in cfg["priors"]:
        out[f"stage1-{variant}"] = Stage(
            "04_stage1.ipynb",
            f"04_stage1_{variant}.ipynb",
            {
                "variant": variant,
                "data_dir": "data/processed",
                "model_dir": f"models/stage1/{variant}",
                "results_dir": f"results/stage1/{variant}",
            },
            ["plaque.train.stage1"],
            ["train", "augment", "stage1"],
            deps=["data/processed"],
            persist=[f"models/stage1/{variant}"],
            metrics=[f"results/stage1/{variant}/metrics.json"],
            plots=[f"results/stage1/{variant}/live/plots/metrics"],
        )
    for method in cfg["methods"]:
        spec = get_method(method)
        deps = ["data/processed"]
        if spec.prior is not None:
            deps.append(f"models/stage1/{spec.prior}")
        if not spec.external and encoder is not None:
            deps.append(encoder)
        out[method_stage(method)] = Stage(
            "05_stage2.ipynb",
            f"05_stage2_{method}.ipynb",
            {
                "method": method,
                "data_dir": "data/processed",
                "priors_dir": "models/stage1",
                "model_dir": f"models/stage2/{method}",
                "results_dir": f"results/stage2/{method}",
                "pred_dir": f"results/predictions/{method}",
            },
            [spec.runner],
            list(spec.params),
            deps=deps,
            outs=[f"results/predictions/{method}"],
            persist=[f"models/stage2/{method}"],
            metrics=[f"results/stage2/{method}/metrics.json"],
            plots=[f"results/stage2/{method}/live/plots/metrics"],
            method=method,
        )
    out["vessel"] = Stage(
        "05_vessel.ipynb",
        "05_vessel.ipynb",
        {"raw_dir": raw, "data_dir": "data/processed", "model_dir": "models/vessel", "results_dir": "results/vessel"},
        ["plaque.train.vessel"],
        ["data", "preprocess", "vessel", "train.precision"],
        deps=[raw, "data/processed"],
        outs=["models/vessel", "results/vessel/val_patients.csv"],
        metrics=["results/vessel/metrics.json"],
    )
    runs = [
        d
        for m in cfg["methods"]
        for d in (
            f"results/predictions/{m}",
            f"results/stage2/{m}/metrics.json",
            f"results/stage2/{m}/live/plots/metrics",
        )
    ]
    # the Stage-1 runs of the priors the methods read: the results say which trained with a random LPIPS backbone
    stage1_runs = sorted({f"results/stage1/{p}/metrics.json" for m in cfg["methods"] if (p := get_method(m).prior)})
    out["evaluate"] = Stage(
        "06_evaluate.ipynb",
        "06_evaluate.ipynb",
        {
            "pred_dir": "results/predictions",
            "data_dir": "data/processed",
            "out_dir": "results/eval",
            "tables_dir": "reports/tables",
            "figures_dir": "reports/figures",
            "runs_dir": "results/stage2",
            "stage1_runs_dir": "results/stage1",
        },
        ["plaque.eval"],
        ["data", "eval"],
        deps=["data/processed", *runs, *stage1_runs],
        outs=["reports/tables", "reports/figures"],
        metrics=["results/eval"],
    )
    return out


def method_stage(method: str) -> str:
    """The stage that trains ``method``: ``stage2-<method>``, or the method's own name for an external one."""
    return method if get_method(method).external else f"stage2-{method}"


def param_keys(raw: Mapping[str, Any], profile: str, keys: list[str]) -> list[str]:
    """``profile``, ``keys``, and each override of the profile (``profiles.<profile>.<key>``) that exists under them."""
    overrides = raw["profiles"][profile]
    found = []
    for key in keys:
        section, _, rest = key.partition(".")
        if section not in PROFILE_SECTIONS or not overrides.get(section):
            continue
        if not rest:
            found.append(f"profiles.{profile}.{section}")
        elif rest in overrides[section]:
            found.append(f"profiles.{profile}.{key}")
    return ["profile", *keys, *found]


_LOADER = """
import importlib, json, sys
modules, build = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in modules:
    try:
        spec = importlib.util.find_spec(name + ".__main__")
    except ModuleNotFoundError:
        spec = None
    importlib.import_module(name + ".__main__" if spec is not None else name)
if build is not None:
    from plaque.config import load_config
    from plaque.methods import get_method, import_object
    cfg = load_config(build["params"])
    spec = get_method(build["method"])
    import_object(spec.predictor)
    if not spec.external:
        from plaque.models.build import build_model
        build_model(cfg, build["method"], pretrained=False)
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if n.split(".")[0] == "plaque" and getattr(m, "__file__", None))))
"""


def loaded_files(root: Path, modules: list[str], method: str | None = None) -> list[str]:
    """Repository-relative files of every ``plaque`` module a fresh interpreter loads when it imports ``modules``
    (a package's ``__main__`` where it has one, as ``python -m`` runs it) and, for ``method``, builds its network
    and imports its predictor."""
    build = None if method is None else {"params": str(root / "params.yaml"), "method": method}
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, json.dumps(modules), json.dumps(build)],
        cwd=root,
        capture_output=True,
        text=True,
        env=_quiet_env(),
    )
    if done.returncode != 0:
        raise InputError(
            f"loading {modules}", done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        )
    checkout = Path(__file__).resolve().parents[1]  # the folder holding this package: the repository root
    return sorted(
        Path(f).resolve().relative_to(checkout).as_posix() for f in json.loads(done.stdout.strip().splitlines()[-1])
    )


def _quiet_env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def notebook_modules(notebook: Path) -> list[str]:
    """The ``plaque`` modules a notebook's code imports (``import plaque.x``, ``from plaque.x import``)."""
    import re

    code = "\n".join(
        "".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"
    )
    return sorted(set(re.findall(r"^\s*(?:from|import)\s+(plaque(?:\.[a-z_0-9]+)*)", code, flags=re.MULTILINE)))


def dvc_yaml(root: Path) -> str:
    """The text of dvc.yaml for ``root``'s params.yaml."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    cfg = load_config(root / "params.yaml")
    planned = stages(cfg)
    jobs = {
        name: (sorted({*notebook_modules(root / "notebooks" / s.notebook), *s.modules}), s.method)
        for name, s in planned.items()
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        code = dict(zip(jobs, pool.map(lambda job: loaded_files(root, *job), jobs.values())))
    out: dict[str, Any] = {}
    for name, s in planned.items():
        args = " ".join(f"-p {k} {v}" for k, v in {"profile": "${profile}", **s.parameters}.items())
        stage: dict[str, Any] = {
            "cmd": f"python -m plaque.notebook notebooks/{s.notebook} reports/notebooks/{s.executed} {args}",
            "deps": [*s.deps, f"notebooks/{s.notebook}", *code[name]],
            "params": param_keys(raw, cfg["profile"], s.params),
            "outs": [
                *s.outs,
                *({p: {"persist": True}} for p in s.persist),
                f"reports/notebooks/{s.executed}",
                f"reports/notebooks/{Path(s.executed).with_suffix('.log')}",
            ],
        }
        if s.metrics:
            stage["metrics"] = list(s.metrics)
        if s.plots:
            stage["plots"] = [{p: {"x": "step"}} for p in s.plots]
        out[name] = stage
    return HEADER + yaml.safe_dump(
        {"stages": out, "metrics": ["results/eval"], "plots": ["reports/figures"]}, sort_keys=False, width=120
    )


def first_difference(now: str, expected: str) -> str | None:
    """The first line that differs between two texts of dvc.yaml (``-`` now has it, ``+`` it should have), or None."""
    lines = difflib.unified_diff(now.splitlines(), expected.splitlines(), lineterm="", n=0)
    return next((line for line in lines if line[:1] in "+-" and not line.startswith(("+++", "---"))), None)


def main(argv: list[str] | None = None) -> int:
    """Command line; ``--check`` exits 1 when dvc.yaml differs, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m plaque.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with dvc.yaml instead of writing it")
    args = parser.parse_args(argv)

    def run() -> int:
        root = repo_root()
        text = dvc_yaml(root)
        path = root / DVC_FILE
        if args.check:
            diff = first_difference(path.read_text() if path.is_file() else "", text)
            if diff is not None:
                print(
                    f"error: {path} is not what `python -m plaque.pipeline` writes (first difference: {diff!r}); "
                    "run `make pipeline`",
                    file=sys.stderr,
                )
                return 1
            return 0
        path.write_text(text)
        print(f"wrote {path}: {len(text.splitlines())} lines")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
