"""The plaque floor: small plaque components become vessel wall, the floor is chosen on validation under the
evaluator's rule, stored in best.pt, and applied wherever the model predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plaque.checkpoint import load_checkpoint, save_atomic
from plaque.classes import CALCIFIED, LUMEN, NONCALCIFIED, WALL
from plaque.data.processed import load_processed
from plaque.inference import FlooredPredictor, fit_plaque_floor, load_predictor, predict_split
from plaque.postprocess import PlaqueFloor, VesselPrediction, choose_floor, describe_floor, floor_dice
from tests.eval.factories import write_processed


def stack_with(components: list[tuple[int, list[tuple[int, int, int]]]], shape=(4, 8, 8)) -> np.ndarray:
    """A wall-filled stack ``shape`` with each ``(class, voxels)`` painted in."""
    pred = np.full(shape, WALL, dtype=np.uint8)
    for cls, voxels in components:
        for z, y, x in voxels:
            pred[z, y, x] = cls
    return pred


def test_components_under_the_floor_become_wall_and_nothing_else_changes() -> None:
    big = [(z, y, x) for z in range(2) for y in range(2) for x in range(2)]  # 8 voxels
    pred = stack_with([(CALCIFIED, big), (CALCIFIED, [(3, 6, 6)]), (NONCALCIFIED, [(3, 0, 7)]), (LUMEN, [(0, 7, 7)])])
    out = PlaqueFloor({CALCIFIED: 2.0, NONCALCIFIED: 0.0}).apply(pred, voxel_mm3=0.5)  # big: 4 mm³, single: 0.5
    assert out[3, 6, 6] == WALL  # the lone calcified voxel
    assert (out[:2, :2, :2] == CALCIFIED).all()  # the large component stays
    assert out[3, 0, 7] == NONCALCIFIED  # floor 0 keeps everything
    assert out[0, 7, 7] == LUMEN
    assert (out != pred).sum() == 1
    assert pred[3, 6, 6] == CALCIFIED, "the input is not modified"
    # the floor is a volume: the same voxels at a larger voxel size survive
    assert PlaqueFloor({CALCIFIED: 2.0}).apply(pred, voxel_mm3=4.0)[3, 6, 6] == CALCIFIED


def test_components_connect_diagonally_across_cross_sections() -> None:
    chain = [(0, 1, 1), (1, 2, 2), (2, 3, 3)]  # corner-touching only: one 26-connected component
    pred = stack_with([(NONCALCIFIED, chain)])
    assert (PlaqueFloor({NONCALCIFIED: 3.0}).apply(pred, 1.0) == pred).all()
    assert (PlaqueFloor({NONCALCIFIED: 3.5}).apply(pred, 1.0) == WALL).all()


def patient(name: str, pred_voxels: list, true_voxels: list) -> VesselPrediction:
    return VesselPrediction(
        name, stack_with([(NONCALCIFIED, pred_voxels)]), stack_with([(NONCALCIFIED, true_voxels)]), 1.0
    )


def test_the_floor_follows_the_evaluators_rule_and_prefers_the_smallest_of_equals() -> None:
    plaque = [(z, y, 3) for z in range(3) for y in range(3)]  # 9 mm³, predicted exactly
    vessels = [
        patient("A", plaque, plaque),
        patient("B", [(0, 6, 6), (0, 6, 7)], []),  # 2 mm³ of plaque where there is none: Dice 0 until removed
        patient("C", [], []),  # no plaque anywhere: never scored
    ]
    dice = floor_dice(vessels, NONCALCIFIED, [0.0, 2.0, 4.0, 16.0])
    assert dice[0.0] == pytest.approx(0.5)  # A 1, B 0, C left out
    assert dice[2.0] == pytest.approx(0.5)  # B's component is 2 mm³: kept (floor is "smaller than")
    assert dice[4.0] == pytest.approx(1.0)  # B now left out
    assert dice[16.0] == pytest.approx(0.0)  # A's plaque removed too: A scores 0, B left out
    floor, table = choose_floor(vessels, candidates=(0.0, 2.0, 4.0, 8.0, 16.0))
    assert floor.min_mm3[NONCALCIFIED] == 4.0  # 4 and 8 tie; the smaller wins
    assert floor.min_mm3[CALCIFIED] == 0.0  # no patient scored: nothing removed
    assert table["non_calcified"]["8"] == pytest.approx(1.0)


def test_a_floor_on_a_split_of_processed_data_is_stored_and_applied(tmp_path: Path) -> None:
    layout = (("V1", "val", 3), ("V2", "val", 3), ("T1", "test", 3))
    processed = load_processed(write_processed(tmp_path / "data", layout))

    row_of = {processed.images[i].tobytes(): i for i in range(len(processed.images))}

    class Noisy:
        """Truth plus one stray non-calcified voxel in the corner of each vessel's first cross-section."""

        method, preprocess = "ours", processed.preprocess_settings()

        def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
            pred = np.stack([processed.labels[row_of[image.tobytes()]] for image in images])
            pred[0, 0, 0] = NONCALCIFIED
            return pred

    record = {"method": "ours", "preprocess": processed.preprocess_settings(), "model": {}}
    save_atomic(record, tmp_path / "best.pt")
    floored = fit_plaque_floor(Noisy(), processed, tmp_path / "best.pt")
    stored = load_checkpoint(tmp_path / "best.pt")
    assert stored["model"] == {} and stored["method"] == "ours"  # the rest of the record is kept
    assert stored["plaque_floor_mm3"]["non_calcified"] > 0  # removing the stray voxel helps on validation
    assert stored["plaque_floor_validation"]["non_calcified"]["0"] < 1.0
    assert describe_floor(stored).startswith("non_calcified ≥")
    predict_split(floored, processed, "test", tmp_path / "pred")
    with np.load(tmp_path / "pred" / "T1.npz") as f:
        expected = np.asarray(processed.labels[f["index"]]).copy()
        expected[0, 0, 0] = WALL  # the stray voxel, removed
        np.testing.assert_array_equal(f["pred"], expected)


def test_load_predictor_applies_the_stored_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = {
        "method": "ours",
        "preprocess": {"step_mm": 1.0},
        "plaque_floor_mm3": {"calcified": 2.0, "non_calcified": 0.0},
    }
    save_atomic(record, tmp_path / "best.pt")

    class Raw:
        method, preprocess = "ours", {"step_mm": 1.0}

        def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
            return stack_with([(CALCIFIED, [(0, 0, 0)])], shape=images.shape)

    monkeypatch.setattr("plaque.inference.segmenter_predictor", lambda *a: Raw())
    predictor = load_predictor(tmp_path / "best.pt")
    assert isinstance(predictor, FlooredPredictor)
    assert predictor.method == "ours" and predictor.preprocess == {"step_mm": 1.0}
    images = np.zeros((2, 4, 4), np.float32)
    assert (predictor.predict(images, spacing_mm=1.0) == WALL).all()  # 1 mm³ < 2 mm³
    assert predictor.predict(images, spacing_mm=2.0)[0, 0, 0] == CALCIFIED  # 4 mm³ voxels: kept
    assert describe_floor({}) == "none" and describe_floor(record) == "calcified ≥ 2 mm³"
