"""The inference layer: predictions assembled vessel by vessel in manifest order, one atomic writer, and
self-contained checkpoints as the only way in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plaque.checkpoint import save_atomic
from plaque.data.processed import MANIFEST_FILE, load_processed
from plaque.errors import InputError
from plaque.eval.predictions import load_method
from plaque.inference import load_predictor, predict_split, write_predictions
from tests.eval.factories import LAYOUT, write_processed


class Recorder:
    """A predictor that answers each stack with its call number and remembers what it was given."""

    method = "fake"
    preprocess: dict = {}

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
        self.calls.append((len(images), spacing_mm))
        return np.full(images.shape, len(self.calls), dtype=np.uint8)


def test_each_vessel_is_one_stack_and_rows_come_back_in_manifest_order(tmp_path: Path) -> None:
    data = write_processed(tmp_path / "processed", LAYOUT)
    manifest = pd.read_csv(data / MANIFEST_FILE, dtype={"patient": str, "vessel": str})
    p02 = manifest.index[manifest["patient"] == "P02"]
    manifest.loc[p02[[1, 3]], "vessel"] = "RCA"  # P02: LAD, RCA, LAD, RCA, interleaved in the manifest
    manifest.to_csv(data / MANIFEST_FILE, index=False)
    processed = load_processed(data)
    recorder = Recorder()
    patients = predict_split(recorder, processed, "test", tmp_path / "pred")
    assert patients == ["P01", "P02", "P03"]
    assert [n for n, _ in recorder.calls] == [3, 2, 2, 2]  # P01; P02's LAD, then its RCA; P03
    spacing = processed.manifest["spacing_mm"].to_numpy()
    assert recorder.calls[1][1] == pytest.approx(np.median(spacing[p02[[0, 2]]]))
    with np.load(tmp_path / "pred" / "P02.npz") as f:
        np.testing.assert_array_equal(f["index"], p02.to_numpy())
        np.testing.assert_array_equal(f["pred"][:, 0, 0], [2, 3, 2, 3])  # each slice from its own vessel's call
    assert sorted(load_method(tmp_path / "pred", "fake", processed)) == patients  # what the evaluator accepts


def test_the_writer_leaves_the_old_predictions_when_it_fails(tmp_path: Path) -> None:
    good = [("P1", np.zeros((2, 4, 4), np.uint8), np.arange(2))]
    write_predictions(tmp_path / "pred", good)
    with pytest.raises(ValueError, match="P2: 3 predicted slices for 2 rows"):
        write_predictions(tmp_path / "pred", [*good, ("P2", np.zeros((3, 4, 4), np.uint8), np.arange(2))])
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["P1.npz"]


def test_a_checkpoint_without_its_record_is_refused(tmp_path: Path) -> None:
    save_atomic({"format": 1, "epoch": 1, "model": {}}, tmp_path / "best.pt")
    with pytest.raises(InputError, match="no method or preprocessing recorded") as info:
        load_predictor(tmp_path)
    assert info.value.where == str(tmp_path / "best.pt")
    with pytest.raises(InputError, match="checkpoint not found"):
        load_predictor(tmp_path / "nowhere.pt")
