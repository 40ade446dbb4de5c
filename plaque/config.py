"""Load `params.yaml`, apply the selected profile, and validate every key.

The configuration is a nested dict that mirrors `params.yaml`. Each section is
read by its own stage. `profiles.<name>` holds per-section overrides that may
only touch compute-scale keys (`PROFILE_KEYS`), never the paper's loss terms,
their weights or architecture constants. A short run's optimiser schedule (``train.lr``,
``train.warmup``, ``train.decay``) is compute scale; the paper's own learning rates stay in
their sections, and ``train.lr: paper`` (the paper profile) uses them unchanged.

Command line: ``python -m plaque.config [--params FILE] [--profile NAME]`` prints
the resolved configuration as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plaque.cli import add_config_options, command_line, run_cli
from plaque.errors import InputError
from plaque.methods import METHODS, PRIOR_VARIANTS
from plaque.paths import repo_root
from plaque.precision import PRECISIONS
from plaque.schedule import DECAYS


@dataclass(frozen=True)
class Num:
    """A number in ``[lo, hi]``; ``integer`` demands an int."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False

    def check(self, key: str, v: Any) -> Any:
        ok_types = (int,) if self.integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, ok_types):
            raise InputError(key, f"expected {'an integer' if self.integer else 'a number'}, got {v!r}")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise InputError(key, f"{v!r} is out of range [{self.lo}, {self.hi}]")
        return v if self.integer else float(v)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values."""

    options: tuple[Any, ...]

    def check(self, key: str, v: Any) -> Any:
        if isinstance(v, bool) or v not in self.options:
            raise InputError(key, f"{v!r} is not one of {list(self.options)}")
        return v


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false``."""

    def check(self, key: str, v: Any) -> Any:
        if not isinstance(v, bool):
            raise InputError(key, f"expected true or false, got {v!r}")
        return v


@dataclass(frozen=True)
class Text:
    """A non-empty string."""

    def check(self, key: str, v: Any) -> Any:
        if not isinstance(v, str) or not v:
            raise InputError(key, f"expected a non-empty string, got {v!r}")
        return v


@dataclass(frozen=True)
class Seq:
    """A list of ``item``; ``length`` fixes its size; ``increasing`` demands sorted distinct values."""

    item: Any
    length: int | None = None
    min_length: int = 1
    increasing: bool = False

    def check(self, key: str, v: Any) -> Any:
        if not isinstance(v, list):
            raise InputError(key, f"expected a list, got {v!r}")
        if (self.length is not None and len(v) != self.length) or len(v) < self.min_length:
            want = self.length if self.length is not None else f"at least {self.min_length}"
            raise InputError(key, f"expected {want} items, got {len(v)}")
        out = [self.item.check(f"{key}[{n}]", x) for n, x in enumerate(v)]
        if self.increasing and any(b <= a for a, b in zip(out, out[1:])):
            raise InputError(key, f"values must be increasing, got {v!r}")
        return out


@dataclass(frozen=True)
class Mapping:
    """A dict with keys and values checked by ``key`` and ``value``; ``sums_to`` checks the value total."""

    key: Any
    value: Any
    sums_to: float | None = None

    def check(self, key: str, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise InputError(key, f"expected a non-empty mapping, got {v!r}")
        out = {self.key.check(f"{key} key", k): self.value.check(f"{key}.{k}", x) for k, x in v.items()}
        if self.sums_to is not None and abs(sum(out.values()) - self.sums_to) > 1e-6:
            raise InputError(key, f"values must sum to {self.sums_to}, got {sum(out.values())}")
        return out


@dataclass(frozen=True)
class WordOrNum:
    """The string ``word`` or a number checked by ``number``."""

    word: str
    number: Num

    def check(self, key: str, v: Any) -> Any:
        return v if v == self.word else self.number.check(key, v)


def _range(lo: float, hi: float) -> Seq:
    return Seq(Num(lo, hi), length=2)


PROB = Num(0.0, 1.0)
POS_INT = Num(1, None, integer=True)
CLASS_ID = Num(0, 4, integer=True)

SCHEMA: dict[str, Any] = {
    "profile": Text(),
    "data": {"raw": Text()},
    "phantom": {
        "patients": POS_INT,
        "seed": Num(0, None, integer=True),
        "matrix": Num(64, 1024, integer=True),
        "supersample": Num(1, 8, integer=True),
        "processes": WordOrNum("auto", POS_INT),
        "scanner": {
            "pixel_mm": _range(0.1, 2.0),
            "thickness_mm": _range(0.1, 5.0),
            "increment_mm": _range(0.1, 5.0),
            "psf_fwhm_xy_mm": _range(0.05, 5.0),
            "psf_fwhm_z_mm": _range(0.05, 5.0),
            "noise_sd_hu": _range(0.0, 200.0),
            "noise_corr_mm": _range(0.0, 5.0),
            "kv_mix": Mapping(Choice((80, 100, 120, 140)), PROB, sums_to=1.0),
        },
    },
    "preprocess": {
        "label_map": Mapping(Num(0, 65535, integer=True), CLASS_ID),
        "window_hu": Seq(Num(-2000, 5000), length=2, increasing=True),
        "crop_px": Num(16, 1024, integer=True),
        "step_mm": Num(0.05, 10.0),
        "size": Num(16, 2048, integer=True),
        "split": Mapping(Choice(("train", "val", "test")), PROB, sums_to=1.0),
        "split_seed": Num(0, None, integer=True),
        "pseudonym_salt": Text(),
        "processes": WordOrNum("auto", POS_INT),
    },
    "augment": {
        "rotation_p": PROB,
        "rotation_max_deg": Num(0.0, 180.0),
        "shift_mm": Num(0.0, 10.0),
    },
    "train": {
        "batch_size_per_gpu": POS_INT,
        "max_epochs": POS_INT,
        "val_every": POS_INT,
        "val_stride": POS_INT,
        "patience": POS_INT,
        "seed": Num(0, None, integer=True),
        "nproc_per_node": WordOrNum("auto", POS_INT),
        "samples_per_epoch": WordOrNum("all", POS_INT),
        "plaque_share": Num(0.0, 0.99),
        "accumulate": POS_INT,
        "precision": Choice(PRECISIONS),
        "compile": Flag(),
        "num_workers": Num(0, 64, integer=True),
        "lr": WordOrNum("paper", Num(0.0, 1.0)),
        "warmup": Num(0.0, 0.5),
        "decay": Choice(DECAYS),
    },
    "stage1": {
        "codebook_size": Num(2, 65536, integer=True),
        "latent_dim": Num(1, 4096, integer=True),
        "downsample": Choice((1, 2, 4, 8, 16)),
        "channels": Seq(Num(1, 4096, integer=True)),
        "res_blocks": Num(0, 16, integer=True),
        "codebook": {
            "ema_decay": Num(0.0, 1.0),
            "reseed_dead": Flag(),
            "dead_after": POS_INT,
        },
        "perceptual": {"net": Choice(("alex", "vgg", "squeeze"))},
        "monitor": Choice(("probe_dice", "val_loss")),
        "loss": {
            "l1": Num(0.0),
            "perceptual": Num(0.0),
            "commit": Num(0.0),
            "contrastive": Num(0.0),
            "temperature": Num(1e-4, 10.0),
        },
        "contrastive": {
            "samples_per_class": POS_INT,
            "hard_classes": Seq(CLASS_ID, increasing=True),
            "embed_dim": POS_INT,
        },
        "optim": {"lr": Num(0.0, 1.0), "betas": Seq(Num(0.0, 1.0), length=2)},
    },
    "stage2": {
        "backbone": Choice(("vit_b", "vit_l", "vit_h", "vit_tiny")),
        "input_size": Num(32, 4096, integer=True),
        "patch_size": Choice((2, 4, 8, 16)),
        "embed_dim": Choice((64, 128, 192, 256)),
        "weights": Text(),
        "sam_tuning": Choice(("lora", "frozen", "full")),
        "lora_rank": POS_INT,
        "decoder": Choice(("head", "class_tokens")),
        "prior": {"adapter_kernel": POS_INT},
        "faa": {"heads": POS_INT, "dropout": PROB},
        "loss": {"ce": Num(0.0), "dice": Num(0.0)},
        "optim": {"lr": Num(0.0, 1.0), "weight_decay": Num(0.0, 1.0)},
    },
    "foundation": {
        "patients": POS_INT,
        "seed": Num(0, None, integer=True),
        "batch_size": POS_INT,
        "epochs": POS_INT,
        "samples_per_epoch": WordOrNum("all", POS_INT),
        "lr": Num(0.0, 1.0),
        "weight_decay": Num(0.0, 1.0),
        "mask_ratio": Num(0.05, 0.95),
        "mask_block": POS_INT,
    },
    "priors": Seq(Choice(tuple(PRIOR_VARIANTS))),
    "methods": Seq(Choice(tuple(METHODS))),
    "nnunet": {
        "dataset_id": Num(1, 999, integer=True),
        "dataset_name": Text(),
        "epochs": POS_INT,
        "iterations_per_epoch": POS_INT,
        "val_iterations_per_epoch": POS_INT,
        "checkpoint": Choice(("best", "final")),
        "tta": Flag(),
        "processes": WordOrNum("auto", POS_INT),
        "batch_size": WordOrNum("auto", POS_INT),
        "seed": Num(0, 2**31 - 1, integer=True),  # numpy takes seeds below 2**32: room for the workers' offsets
        "precision": Choice(PRECISIONS),
    },
    "vessel": {
        "spacing_mm": Num(0.1, 5.0),
        "channels": Seq(Num(1, 1024, integer=True), min_length=2),
        "res_units": Num(0, 4, integer=True),
        "patch": Num(16, 512, integer=True),
        "batch_size": POS_INT,
        "steps": POS_INT,
        "lr": Num(0.0, 1.0),
        "weight_decay": Num(0.0, 1.0),
        "on_vessel": PROB,
        "threshold": Num(0.01, 0.99),
        "min_piece_fraction": Num(0.0, 1.0),
        "seed": Num(0, None, integer=True),
    },
    "eval": {
        "bootstrap_resamples": Num(100, None, integer=True),
        "seed": Num(0, None, integer=True),
        "ci_level": Num(0.5, 0.999),
        "qualitative": {"representative": POS_INT, "hard": Num(0, 64, integer=True)},
    },
}

# Keys a profile may override: cohort size, cross-section field of view, size and spacing, input
# size, backbone and the width of the image embedding (its weights, and how it is tuned, which a weak
# stand-in for SAM decides by measurement), epoch budgets, the optimiser schedule of a short run (peak
# learning rate, warmup, decay), validation cadence and sampling, batch caps and process counts.
# Nothing that changes the paper's method: its loss terms, their weights, and its architecture.
PROFILE_KEYS: frozenset[str] = frozenset(
    {
        "phantom.patients",
        "phantom.matrix",
        "phantom.processes",
        "preprocess.crop_px",
        "preprocess.size",
        "preprocess.step_mm",
        "preprocess.processes",
        "stage2.backbone",
        "stage2.input_size",
        "stage2.patch_size",
        "stage2.embed_dim",
        "stage2.sam_tuning",
        "stage2.weights",
        "foundation.patients",
        "foundation.epochs",
        "foundation.samples_per_epoch",
        "nnunet.epochs",
        "nnunet.iterations_per_epoch",
        "nnunet.val_iterations_per_epoch",
        "nnunet.tta",
        "nnunet.processes",
        "nnunet.batch_size",
        "train.max_epochs",
        "train.val_every",
        "train.val_stride",
        "train.samples_per_epoch",
        "train.nproc_per_node",
        "train.accumulate",
        "train.precision",
        "train.compile",
        "train.num_workers",
        "train.lr",
        "train.warmup",
        "train.decay",
        "vessel.channels",
        "vessel.patch",
        "vessel.batch_size",
        "vessel.steps",
    }
)

RANDOM_WEIGHTS = "random"  # stage2.weights of a randomly initialised SAM image encoder (warned, recorded)
PHANTOM = "phantom"  # data.raw of the built-in cohort (else: the user's raw folder, relative to the repository)
PROFILE_SECTIONS: tuple[str, ...] = ("phantom", "preprocess", "train", "stage2", "foundation", "nnunet", "vessel")

DEFAULT_PARAMS = "params.yaml"


def _validate(node: Any, schema: Any, key: str) -> Any:
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            raise InputError(key or "params", f"expected a mapping, got {node!r}")
        unknown = sorted(set(node) - set(schema))
        if unknown:
            raise InputError(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key")
        missing = sorted(set(schema) - set(node))
        if missing:
            raise InputError(f"{key}.{missing[0]}" if key else missing[0], "missing key")
        return {k: _validate(node[k], schema[k], f"{key}.{k}" if key else k) for k in schema}
    return schema.check(key, node)


def _schema_at(dotted: str) -> Any:
    node: Any = SCHEMA
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


def _profile_overrides(name: str, overrides: Any) -> dict[str, Any]:
    """Flatten ``profiles.<name>`` (``{section: {key: value}}``) to dotted keys, checking each is compute-scale."""
    where = f"profiles.{name}"
    if not isinstance(overrides, dict) or set(overrides) != set(PROFILE_SECTIONS):
        raise InputError(where, f"expected exactly the sections {list(PROFILE_SECTIONS)} (use {{}} for none)")
    flat: dict[str, Any] = {}
    for section, values in overrides.items():
        if not isinstance(values, dict):
            raise InputError(f"{where}.{section}", "expected a mapping of key -> value")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted not in PROFILE_KEYS:
                why = "unknown key" if _schema_at(dotted) is None else "not a compute-scale key"
                raise InputError(f"{where}.{dotted}", f"{why}; profiles may only override {sorted(PROFILE_KEYS)}")
            flat[dotted] = value
    return flat


def resolve(raw: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Validate a parsed `params.yaml` and apply a profile.

    Args:
        raw: the parsed file.
        profile: profile name; ``None`` uses the file's ``profile`` key.

    Returns:
        The resolved configuration (without ``profiles``); ``profile`` holds the applied name.

    Raises:
        InputError: unknown or missing keys, wrong types, out-of-range values, a method whose
            Stage-1 variant is not in ``priors``, an unknown profile, or a profile overriding a
            key that is not compute-scale.
    """
    if not isinstance(raw, dict):
        raise InputError("params", "expected a mapping at the top level")
    profiles = raw.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise InputError("profiles", "expected a mapping of profile name -> overrides")
    cfg = _validate({k: v for k, v in raw.items() if k != "profiles"}, SCHEMA, "")
    missing = sorted(
        {METHODS[m].prior for m in cfg["methods"] if m in METHODS and METHODS[m].prior} - set(cfg["priors"])
    )
    if missing:
        raise InputError("priors", f"lacks {', '.join(missing)}, the Stage-1 variant(s) of the listed methods")
    if cfg["foundation"]["seed"] == cfg["phantom"]["seed"]:
        raise InputError(
            "foundation.seed",
            "must differ from phantom.seed: the foundation cohort shares no patient with the evaluation cohort",
        )
    if cfg["data"]["raw"] != PHANTOM and Path(cfg["data"]["raw"]).is_absolute():
        raise InputError("data.raw", "give the cohort folder relative to the repository (DVC tracks it there)")
    name = profile if profile is not None else cfg["profile"]
    flat = {pname: _profile_overrides(pname, overrides) for pname, overrides in profiles.items()}
    if name not in flat:
        raise InputError("profile", f"unknown profile {name!r}; choose one of {sorted(flat)}")
    out = copy.deepcopy(cfg)
    for dotted, value in flat[name].items():
        _set(out, dotted, _validate(value, _schema_at(dotted), f"profiles.{name}.{dotted}"))
    out["profile"] = name
    return out


def load_config(params: str | Path | None = None, profile: str | None = None) -> dict[str, Any]:
    """Read and resolve a params file (default: the repository's `params.yaml`)."""
    if params is None:
        try:
            params = repo_root() / DEFAULT_PARAMS
        except FileNotFoundError as e:
            raise InputError("params", f"{e}; pass --params FILE") from None
    path = Path(params)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "params file not found") from None
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        return resolve(raw, profile)
    except InputError as e:
        raise InputError(f"{path}: {e.where}", e.problem) from None


def worker_processes(processes: int | str) -> int:
    """The worker count that ``processes`` (``phantom.processes``, ``preprocess.processes``) stands for: a
    positive integer as it is, ``"auto"`` the number of CPU cores this process may run on.

    Raises:
        InputError: anything else.
    """
    if processes == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise InputError("processes", f"expected a positive integer or 'auto', got {processes!r}")
    return processes


def main(argv: list[str] | None = None) -> int:
    """Print the resolved configuration as JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], **command_line("plaque.config", "plaque-config", "--profile paper")
    )
    add_config_options(parser)
    args = parser.parse_args(argv)
    return run_cli(lambda: print(json.dumps(load_config(args.params, args.profile), indent=2)))


if __name__ == "__main__":
    sys.exit(main())
