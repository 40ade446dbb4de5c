"""The sweep's configuration overrides."""

import pytest

from benchmarks.sweep import BASE, DEFAULT_VARIANTS, apply_overrides
from plaque.config import load_config


def test_overrides_set_typed_values_on_a_copy():
    cfg = load_config(profile="demo")
    out = apply_overrides(cfg, BASE + " " + DEFAULT_VARIANTS["width 256"])
    assert out["train"]["lr"] == 1e-3 and out["train"]["decay"] == "cosine" and out["stage2"]["embed_dim"] == 256
    assert out["train"]["max_epochs"] == 4 and isinstance(out["train"]["lr"], float)
    assert cfg["stage2"]["embed_dim"] == load_config(profile="demo")["stage2"]["embed_dim"]  # the input is untouched


def test_unknown_key_is_refused():
    with pytest.raises(KeyError, match="train.lrr"):
        apply_overrides(load_config(profile="demo"), "train.lrr=1")
