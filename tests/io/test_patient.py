"""Patient folders: listing, loading, duplicate detection, and the DICOM <-> NIfTI world round trip."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from plaque.errors import InputError
from plaque.io.dicom import write_series
from plaque.io.geometry import LPS_TO_RAS
from plaque.io.labels import write_labels
from plaque.io.markups import write_curves
from plaque.io.patient import CENTERLINE_FILE, DICOM_DIR, LABEL_FILE, check_unique, list_patients, load_patient
from tests.io.factories import SHAPE, TAGS, axial, flipped_oblique, write_nifti, write_nrrd

IDENTITY = {v: v for v in range(5)}


def test_list_patients_sorted_ignoring_hidden_and_files(tmp_path: Path) -> None:
    for name in ("p2", "p10", "p1", ".trash"):
        (tmp_path / name / DICOM_DIR).mkdir(parents=True)
    (tmp_path / "manifest.csv").write_text("x")
    assert [p.name for p in list_patients(tmp_path)] == ["p1", "p10", "p2"]


def test_list_patients_missing_raw(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"raw: raw data folder does not exist"):
        list_patients(tmp_path / "raw")


def test_list_patients_no_patients(tmp_path: Path) -> None:
    (tmp_path / ".cache").mkdir()
    with pytest.raises(InputError, match=r"no patient folders"):
        list_patients(tmp_path)


def test_list_patients_names_folders_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "p1" / DICOM_DIR).mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "p2").mkdir()
    with pytest.raises(InputError, match=r"subfolder\(s\) without dicom/ or image\.nii\.gz or .*: notes, p2"):
        list_patients(tmp_path)


def test_load_patient(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    lines = {"LAD": axial().index_to_world(np.array([[0.0, 2.0, 3.0], [3.0, 12.5, 15.4]]))}
    folder = make_patient(tmp_path / "p1", centerlines=lines)
    patient = load_patient(folder, {0: 0, 1: 2, 2: 1, 3: 3, 4: 4})
    source = np.asanyarray(nib.load(folder / LABEL_FILE).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(patient.labels, np.array([0, 2, 1, 3, 4], np.uint8)[source])
    assert patient.hu.shape == SHAPE and patient.hu.dtype == np.float32
    assert patient.geometry.matches(axial())
    assert patient.patient_id == TAGS["PatientID"]
    assert patient.study_uid == str(pydicom.dcmread(folder / DICOM_DIR / "IM00001.dcm").StudyInstanceUID)
    np.testing.assert_allclose(patient.centerlines["LAD"], lines["LAD"], atol=1e-4)


def test_load_patient_without_centerline(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    patient = load_patient(make_patient(tmp_path / "p1"), IDENTITY)
    assert patient.centerlines == {}


def test_load_patient_missing_labels(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    folder = make_patient(tmp_path / "p1")
    (folder / LABEL_FILE).unlink()
    with pytest.raises(InputError, match=r"p1/label\.nii\.gz: label file not found"):
        load_patient(folder, IDENTITY)


def test_load_patient_labels_on_another_grid(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    folder = make_patient(tmp_path / "p1")
    write_labels(folder / LABEL_FILE, np.zeros(SHAPE, np.uint8), flipped_oblique())
    with pytest.raises(InputError, match=r"label\.nii\.gz: label grid differs from the image grid"):
        load_patient(folder, IDENTITY)


def test_centerline_outside_volume(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    inside = axial().index_to_world(np.array([[1.0, 1.0, 1.0], [2.0, 8.0, 8.0]]))
    outside = axial().index_to_world(np.array([[1.0, 1.0, 1.0], [3.0, 8.0, 16.2]]))
    folder = make_patient(tmp_path / "p1", centerlines={"LAD": inside, "RCA": outside})
    with pytest.raises(InputError, match=r"centerline\.json: vessel 'RCA': point 1 at .* outside the image volume"):
        load_patient(folder, IDENTITY)


def test_centerline_at_volume_edge_is_inside(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    edge = axial().index_to_world(np.array([[-0.5, -0.5, -0.5], [3.5, 15.5, 15.5]]))
    folder = make_patient(tmp_path / "p1", centerlines={"LAD": edge})
    assert load_patient(folder, IDENTITY).centerlines["LAD"].shape == (2, 3)


def test_check_unique_accepts_distinct(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    patients = [load_patient(make_patient(tmp_path / f"p{n}", tags={"PatientID": f"ID{n}"}), IDENTITY) for n in (1, 2)]
    check_unique(patients)
    assert patients[0].study_uid != patients[1].study_uid


def test_the_same_patient_in_two_folders_is_a_follow_up_not_an_error(
    tmp_path: Path, make_patient: Callable[..., Path]
) -> None:
    patients = [load_patient(make_patient(tmp_path / name), IDENTITY) for name in ("a", "b")]  # same PatientID
    check_unique(patients)
    assert patients[0].patient_id == patients[1].patient_id and patients[0].series_uid != patients[1].series_uid


def test_the_same_series_in_two_folders_is_an_error(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    patients = [
        load_patient(make_patient(tmp_path / name, tags={"PatientID": name}, uid_seed="same"), IDENTITY)
        for name in ("a", "b")
    ]
    with pytest.raises(InputError, match=r"/b: same SeriesInstanceUID as .*/a\b") as err:
        check_unique(patients)
    assert patients[0].series_uid not in str(err.value)


def test_check_unique_skips_empty_ids(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    patients = [load_patient(make_patient(tmp_path / name, tags={"PatientID": ""}), IDENTITY) for name in ("a", "b")]
    check_unique(patients)
    assert [p.patient_id for p in patients] == ["", ""]


def test_nifti_affine_agrees_with_dicom_patient_coordinates(tmp_path: Path) -> None:
    """Flipped oblique grid (rows rotated about z, slice_dir -z), shuffled file names: both files agree in LPS."""
    geometry = flipped_oblique()
    folder = tmp_path / "p1"
    hu = np.full(SHAPE, -100.0)
    labels = np.zeros(SHAPE, np.uint8)
    k, j, i = 1, 3, 11
    hu[k, j, i], labels[k, j, i] = 1200.0, 3
    paths = write_series(folder / DICOM_DIR, hu, geometry, TAGS, "roundtrip")
    for n, path in enumerate(paths):
        path.rename(path.with_name(f"{(n * 3) % len(paths)}.x"))
    write_labels(folder / LABEL_FILE, labels, geometry)

    patient = load_patient(folder, IDENTITY)

    assert patient.geometry.matches(geometry)
    np.testing.assert_allclose(patient.geometry.slice_dir, [0, 0, -1], atol=1e-6)
    np.testing.assert_array_equal(patient.labels, labels)
    assert patient.hu[k, j, i] == 1200.0 and np.count_nonzero(patient.hu > 0) == 1

    img = nib.load(folder / LABEL_FILE)
    ((ii, jj, kk),) = np.argwhere(np.asanyarray(img.dataobj) == 3)
    ras = img.affine @ np.array([ii, jj, kk, 1.0])
    lps = (LPS_TO_RAS @ ras)[:3]
    np.testing.assert_allclose(lps, patient.geometry.index_to_world(np.array([kk, jj, ii])), atol=1e-3)
    # the same point straight from the DICOM header of the slice file that holds the bright voxel
    bright = next(
        pydicom.dcmread(p) for p in (folder / DICOM_DIR).iterdir() if (pydicom.dcmread(p).pixel_array > 1024).any()
    )
    iop = np.array(bright.ImageOrientationPatient, dtype=float)
    dy, dx = (float(v) for v in bright.PixelSpacing)
    dicom_lps = np.array(bright.ImagePositionPatient, dtype=float) + iop[:3] * dx * ii + iop[3:] * dy * jj
    np.testing.assert_allclose(lps, dicom_lps, atol=1e-3)


def test_centerline_file_must_be_valid_when_present(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    folder = make_patient(tmp_path / "p1")
    (folder / CENTERLINE_FILE).write_text(json.dumps({"LAD": [[0, 0, 0]]}))
    with pytest.raises(InputError, match=r"centerline\.json: vessel 'LAD': 1 point\(s\)"):
        load_patient(folder, IDENTITY)


def test_broken_series_is_named(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    folder = make_patient(tmp_path / "p1")
    shutil.rmtree(folder / DICOM_DIR)
    (folder / DICOM_DIR).mkdir()
    with pytest.raises(InputError, match=r"p1/dicom: DICOM folder holds no files"):
        load_patient(folder, IDENTITY)


@pytest.mark.parametrize(("image", "label"), [("image.nii.gz", "label.nii.gz"), ("image.nrrd", "label.nrrd")])
def test_a_volume_patient_loads_as_its_dicom_twin(
    tmp_path: Path, make_patient: Callable[..., Path], image: str, label: str
) -> None:
    geometry = flipped_oblique()
    lines = {"LAD": geometry.index_to_world(np.array([[0.0, 2.0, 3.0], [3.0, 12.5, 15.4]]))}
    twin = load_patient(make_patient(tmp_path / "dcm", geometry=geometry, centerlines=lines), IDENTITY)
    folder = tmp_path / "vol"
    folder.mkdir()
    write = write_nifti if image.endswith(".nii.gz") else write_nrrd
    write(folder / image, twin.hu.astype(np.int16), geometry)
    write(folder / label, twin.labels, geometry)
    write_curves(folder / "centerlines", lines)
    patient = load_patient(folder, IDENTITY)
    assert patient.geometry.matches(twin.geometry, tol_mm=1e-4)
    np.testing.assert_array_equal(patient.hu, twin.hu)
    np.testing.assert_array_equal(patient.labels, twin.labels)
    np.testing.assert_allclose(patient.centerlines["LAD"], twin.centerlines["LAD"], atol=1e-4)
    assert patient.patient_id == "vol" and patient.series_uid == ""


def test_layout_comes_from_subfolders_not_stray_files(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    make_patient(tmp_path / "p1")
    (tmp_path / "p2").mkdir()
    write_nifti(tmp_path / "p2" / "image.nii", np.zeros(SHAPE, np.int16), axial())
    for name in ("cohort.json", "DICOMDIR", "README.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in list_patients(tmp_path)] == ["p1", "p2"]


def test_two_scans_in_one_patient_folder_is_an_error(tmp_path: Path, make_patient: Callable[..., Path]) -> None:
    folder = make_patient(tmp_path / "p1")
    write_nifti(folder / "image.nii.gz", np.zeros(SHAPE, np.int16), axial())
    with pytest.raises(InputError, match=r"p1: holds several scans \(dicom, image\.nii\.gz\): keep one"):
        load_patient(folder, IDENTITY)


def test_volume_labels_on_another_grid(tmp_path: Path) -> None:
    write_nrrd(tmp_path / "image.nrrd", np.zeros(SHAPE, np.int16), axial())
    write_nrrd(tmp_path / "label.nrrd", np.zeros(SHAPE, np.uint8), flipped_oblique())
    with pytest.raises(InputError, match=r"label\.nrrd: label grid differs from the image grid"):
        load_patient(tmp_path, IDENTITY)


def _cd_export(source: Path, out: Path) -> None:
    """Write the DICOM files of ``source`` as a media export: a DICOMDIR and nested PT*/ST*/SE*/IM* files."""
    fs = FileSet()
    for path in sorted(source.iterdir()):
        fs.add(path)
    fs.write(out)


def test_a_dicomdir_is_read_through(tmp_path: Path) -> None:
    tags = TAGS | {"StudyDate": "20240102", "StudyTime": "101010", "StudyID": "7"}
    hu = np.random.default_rng(1).integers(-1000, 1000, size=SHAPE).astype(np.float64)
    write_series(tmp_path / "flat", hu, flipped_oblique(), tags, "cd")
    folder = tmp_path / "p1"
    _cd_export(tmp_path / "flat", folder / DICOM_DIR)
    assert (folder / DICOM_DIR / "DICOMDIR").is_file() and not list((folder / DICOM_DIR).glob("*.dcm"))
    write_labels(folder / LABEL_FILE, np.zeros(SHAPE, np.uint8), flipped_oblique())
    patient = load_patient(folder, IDENTITY)
    np.testing.assert_array_equal(patient.hu, hu)
    assert patient.geometry.matches(flipped_oblique())
    next((folder / DICOM_DIR).rglob("IM000002")).unlink()
    with pytest.raises(InputError, match=r"dicom/DICOMDIR: lists 1 file\(s\) that do not exist"):
        load_patient(folder, IDENTITY)
