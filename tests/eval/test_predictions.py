"""Saved predictions are checked against the test split: every rejection names the method and the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plaque.data.processed import Processed, load_processed
from plaque.errors import InputError
from plaque.eval import predictions
from plaque.eval.predictions import load_method, method_folders
from tests.eval.factories import TEST_PATIENTS, truth_by_patient, write_predictions, write_processed

METHOD = "sam_lora"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed(tmp_path_factory.mktemp("eval-data") / "processed")


@pytest.fixture(scope="module")
def processed(data: Path) -> Processed:
    return load_processed(data)


@pytest.fixture
def folder(tmp_path: Path, data: Path) -> Path:
    """A valid method folder: the ground truth of every test patient."""
    return write_predictions(tmp_path / "preds" / METHOD, data)


def rewrite(folder: Path, patient: str, **arrays: np.ndarray) -> Path:
    path = folder / f"{patient}.npz"
    np.savez(path, **arrays)
    return path


def rejected(folder: Path, processed: Processed, path: Path, patient: str) -> InputError:
    """Load ``folder``, expect an InputError naming the method, ``patient`` and ``path``; return it."""
    with pytest.raises(InputError) as info:
        load_method(folder, METHOD, processed)
    err = info.value
    assert err.where == str(path)
    assert METHOD in err.problem and patient in err.problem
    return err


def test_test_rows_are_each_patients_test_rows_in_manifest_order(processed: Processed) -> None:
    rows = predictions.test_rows(processed)
    assert list(rows) == list(TEST_PATIENTS)  # the train patient P00 is not there
    assert [r.tolist() for r in rows.values()] == [[0, 1, 2], [5, 6, 7, 8], [9, 10]]
    assert all(r.dtype == np.int64 for r in rows.values())


def test_valid_folder_loads_every_test_patient(folder: Path, data: Path, processed: Processed) -> None:
    preds = load_method(folder, METHOD, processed)
    truth = truth_by_patient(data)
    assert list(preds) == list(TEST_PATIENTS)
    for patient, pred in preds.items():
        assert pred.dtype == np.uint8 and np.array_equal(pred, truth[patient][1])


def test_int64_class_ids_are_accepted_as_uint8(folder: Path, data: Path, processed: Processed) -> None:
    rows, labels = truth_by_patient(data)["P02"]
    rewrite(folder, "P02", pred=labels.astype(np.int64), index=rows)
    pred = load_method(folder, METHOD, processed)["P02"]
    assert pred.dtype == np.uint8 and np.array_equal(pred, labels)


def test_missing_patient(folder: Path, processed: Processed) -> None:
    (folder / "P02.npz").unlink()
    err = rejected(folder, processed, folder / "P02.npz", "P02")
    assert "no prediction" in err.problem


@pytest.mark.parametrize("patient", ["P00", "P99"])  # a train patient, a patient the data do not have
def test_unknown_patient_file(folder: Path, data: Path, processed: Processed, patient: str) -> None:
    rows, labels = truth_by_patient(data)["P01"]
    path = rewrite(folder, patient, pred=labels, index=rows)
    err = rejected(folder, processed, path, patient)
    assert "not a test patient" in err.problem


@pytest.mark.parametrize(
    "index",
    [
        np.array([5, 6, 7, 9], np.int64),  # other rows (one of P03's)
        np.array([8, 7, 6, 5], np.int64),  # the right rows, in another order
        np.array([3, 4, 5, 6], np.int64),  # train rows
        np.array([5, 6, 7], np.int64),  # too few
    ],
    ids=["other-rows", "other-order", "train-rows", "too-few"],
)
def test_wrong_index(folder: Path, data: Path, processed: Processed, index: np.ndarray) -> None:
    _, labels = truth_by_patient(data)["P02"]
    path = rewrite(folder, "P02", pred=labels[: len(index)], index=index)
    err = rejected(folder, processed, path, "P02")
    assert "'index'" in err.problem and "4 test rows" in err.problem


@pytest.mark.parametrize("shape", [(4, 8, 8), (3, 16, 16), (4, 16, 16, 1)])
def test_wrong_shape(folder: Path, data: Path, processed: Processed, shape: tuple[int, ...]) -> None:
    rows, _ = truth_by_patient(data)["P02"]
    path = rewrite(folder, "P02", pred=np.zeros(shape, np.uint8), index=rows)
    err = rejected(folder, processed, path, "P02")
    assert str(shape) in err.problem and "(4, 16, 16)" in err.problem


@pytest.mark.parametrize("bad", [5, 255, -1])
def test_class_id_out_of_range(folder: Path, data: Path, processed: Processed, bad: int) -> None:
    rows, labels = truth_by_patient(data)["P03"]
    pred = labels.astype(np.int16)
    pred[1, 3, 4] = bad
    path = rewrite(folder, "P03", pred=pred, index=rows)
    err = rejected(folder, processed, path, "P03")
    assert f"class id {bad}" in err.problem


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_non_integer_dtype(folder: Path, data: Path, processed: Processed, dtype: type) -> None:
    rows, labels = truth_by_patient(data)["P01"]
    path = rewrite(folder, "P01", pred=(labels > 0).astype(dtype), index=rows)
    err = rejected(folder, processed, path, "P01")
    assert "integer class ids" in err.problem and np.dtype(dtype).name in err.problem


@pytest.mark.parametrize("keep", ["pred", "index", "other"])
def test_missing_arrays(folder: Path, data: Path, processed: Processed, keep: str) -> None:
    rows, labels = truth_by_patient(data)["P01"]
    path = rewrite(folder, "P01", **{keep: labels if keep != "index" else rows})
    err = rejected(folder, processed, path, "P01")
    assert "'pred' and 'index'" in err.problem and keep in err.problem


def test_unreadable_file(folder: Path, processed: Processed) -> None:
    path = folder / "P01.npz"
    path.write_bytes(b"not an npz archive")
    err = rejected(folder, processed, path, "P01")
    assert "unreadable" in err.problem


def test_method_folders_lists_the_method_sub_folders(tmp_path: Path, data: Path) -> None:
    root = tmp_path / "predictions"
    write_predictions(root / "sam_lora", data)
    write_predictions(root / "ours", data)
    (root / ".cache").mkdir()  # hidden folders are not methods
    (root / "notes.txt").write_text("not a method")
    assert method_folders(root) == {"ours": root / "ours", "sam_lora": root / "sam_lora"}


def test_method_folder_without_predictions(tmp_path: Path, data: Path) -> None:
    root = tmp_path / "predictions"
    write_predictions(root / "ours", data)
    (root / "sam_lora").mkdir()
    (root / "sam_lora" / "readme.txt").write_text("nothing here yet")
    with pytest.raises(InputError) as info:
        method_folders(root)
    assert info.value.where == str(root / "sam_lora") and "sam_lora" in info.value.problem


def test_root_holding_predictions_is_one_method_named_after_it(tmp_path: Path, data: Path) -> None:
    folder = write_predictions(tmp_path / "predictions" / "nnunet", data)
    assert method_folders(folder) == {"nnunet": folder}


def test_method_folders_rejects_a_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        method_folders(tmp_path / "nowhere")
    assert info.value.where == str(tmp_path / "nowhere") and "not found" in info.value.problem
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as info:
        method_folders(tmp_path / "empty")
    assert info.value.where == str(tmp_path / "empty") and "no method folders" in info.value.problem
