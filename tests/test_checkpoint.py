"""Atomic checkpoint writes, weights-only reads, RNG states that survive a weights-only round trip."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from plaque import checkpoint
from plaque.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from plaque.errors import InputError


class Opaque:
    """A class the weights-only unpickler does not know."""


def test_round_trip(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "history": [{"loss": 0.5}], "x": None}
    save_atomic(obj, tmp_path / "sub" / "c.pt")
    back = load_checkpoint(tmp_path / "sub" / "c.pt")
    assert torch.equal(back["model"]["w"], obj["model"]["w"])
    assert (back["epoch"], back["history"], back["x"]) == (3, [{"loss": 0.5}], None)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["c.pt"]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        save_atomic({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on where the lambda lives
        save_atomic({"epoch": 3, "f": lambda: 0}, path)  # not picklable: fails inside torch.save
    back = load_checkpoint(path)
    assert back["epoch"] == 1 and torch.equal(back["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "obj": Opaque()}, path)
    with pytest.raises(InputError, match="needs pickle to load; refusing") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "Opaque" in str(err.value)


def test_numpy_array_is_refused(tmp_path):
    path = tmp_path / "np.pt"
    torch.save({"a": np.zeros(3)}, path)
    with pytest.raises(InputError, match="pickle"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        save_atomic({"w": torch.randn(1000)}, path)
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable checkpoint") as err:
        load_checkpoint(path)
    assert err.value.where == str(path)


def test_missing_and_non_dict(tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(InputError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def _draws() -> tuple[torch.Tensor, np.ndarray, list[float]]:
    return torch.rand(5), np.random.rand(5), [random.random(), random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)]


def test_rng_state_survives_weights_only_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn(), random.gauss(0.0, 1.0)  # leave cached Gaussians behind
    save_atomic({"rng": rng_state()}, tmp_path / "rng.pt")
    first = _draws()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = _draws()
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]
