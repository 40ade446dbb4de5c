"""read_series: HU and geometry round trips through write_series, and one test per bad input."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from plaque.errors import InputError
from plaque.io.dicom import read_series, write_series
from plaque.io.geometry import Geometry
from tests.io.factories import TAGS, axial, flipped_oblique, random_hu


def edit(path: Path, **tags: object) -> None:
    """Set DICOM tags of one file by keyword; ``None`` deletes the tag."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def test_axial_round_trip(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, hu, geometry = series
    series = read_series(folder)
    got = series.hu
    got_geometry = series.geometry
    identity = series.identity
    assert got.dtype == np.float32 and got.shape == hu.shape
    assert np.abs(got - hu).max() <= 1.0
    assert got_geometry.matches(geometry)
    np.testing.assert_allclose(got_geometry.spacing, geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(got_geometry.slice_dir, [0, 0, 1], atol=1e-6)
    assert identity["PatientID"] == TAGS["PatientID"]
    assert identity["StudyInstanceUID"] and identity["SeriesInstanceUID"]
    assert identity["StudyInstanceUID"] != identity["SeriesInstanceUID"]


def test_written_files_are_what_pydicom_writes(series: tuple[Path, np.ndarray, Geometry]) -> None:
    """write_series assembles files from pre-encoded elements; pydicom re-encoding every value gives the same bytes."""
    folder, _, _ = series
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        decoded = [ds[element.tag] for element in ds]  # every raw element decoded to a value
        assert all(not isinstance(element, pydicom.dataelem.RawDataElement) for element in ds._dict.values())
        assert len(decoded) == len(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes(), path.name


def test_double_oblique_round_trip(tmp_path: Path) -> None:
    rot, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    row, col = rot[:, 0], rot[:, 1]
    geometry = Geometry((5, 12, 10), np.array([3.0, -4.0, 5.0]), row, col, np.cross(row, col), (0.75, 0.3, 0.5))
    hu = random_hu(geometry.shape, seed=1)
    write_series(tmp_path, hu, geometry, TAGS, "oblique")
    series = read_series(tmp_path)
    got = series.hu
    got_geometry = series.geometry
    assert got_geometry.matches(geometry)
    assert got_geometry.shape == (5, 12, 10)
    assert np.abs(got - hu).max() <= 1.0


def test_flipped_geometry_round_trip(tmp_path: Path) -> None:
    geometry = flipped_oblique()
    hu = random_hu(seed=2)
    write_series(tmp_path, hu, geometry, TAGS, "flipped")
    series = read_series(tmp_path)
    got = series.hu
    got_geometry = series.geometry
    assert got_geometry.matches(geometry)
    np.testing.assert_allclose(got_geometry.slice_dir, [0, 0, -1], atol=1e-6)
    assert np.abs(got - hu).max() <= 1.0


def test_sorted_by_position_not_name_or_instance_number(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, hu, geometry = series
    files = sorted(folder.iterdir())
    order = [2, 0, 3, 1]  # file k gets the name and InstanceNumber of position order[k]
    for k, path in enumerate(files):
        edit(path, InstanceNumber=10 - k)
        path.rename(folder / f"tmp{order[k]}")
    for k in range(len(files)):
        (folder / f"tmp{k}").rename(folder / f"{chr(ord('z') - k)}.dcm")
    series = read_series(folder)
    got = series.hu
    got_geometry = series.geometry
    assert np.abs(got - hu).max() <= 1.0
    assert got_geometry.matches(geometry)


def test_rescale_slope_and_intercept_are_applied(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, hu, _ = series
    path = sorted(folder.iterdir())[1]
    ds = pydicom.dcmread(path)
    stored = np.rint((hu[1] + 2000.0) / 2.0).astype(np.int16)
    ds.PixelData = stored.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-2000"
    ds.save_as(path)
    series = read_series(folder)
    got = series.hu
    np.testing.assert_array_equal(got[1], stored.astype(np.float32) * 2 - 2000)
    assert np.abs(got[1] - hu[1]).max() <= 1.0


def test_hidden_files_are_ignored(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, hu, _ = series
    (folder / ".DS_Store").write_bytes(b"\0junk")
    series = read_series(folder)
    got = series.hu
    assert got.shape == hu.shape


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        read_series(tmp_path / "nope")
    assert err.value.where == str(tmp_path / "nope")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / ".hidden").write_text("x")
    with pytest.raises(InputError, match="holds no files"):
        read_series(tmp_path)


def test_subfolder_is_an_error(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    (folder / "more").mkdir()
    with pytest.raises(InputError, match=r"more: unexpected subfolder"):
        read_series(folder)


def test_non_dicom_file(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.txt: not a DICOM file"):
        read_series(folder)


def test_dicom_without_pixel_data(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    edit(folder / "IM00003.dcm", PixelData=None)
    with pytest.raises(InputError, match=r"IM00003\.dcm: DICOM file has no pixel data"):
        read_series(folder)


@pytest.mark.parametrize("cut", [2, 100, 500])
def test_truncated_file(series: tuple[Path, np.ndarray, Geometry], cut: int) -> None:
    folder, _, _ = series
    path = folder / "IM00002.dcm"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(InputError, match=r"IM00002\.dcm: truncated pixel data: \d+ of 512 bytes"):
        read_series(folder)


def test_truncated_header(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    path = folder / "IM00004.dcm"
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(InputError, match=r"IM00004\.dcm: .*(truncated|no pixel data)"):
        read_series(folder)


def test_two_series_mixed(series: tuple[Path, np.ndarray, Geometry], tmp_path: Path) -> None:
    folder, _, _ = series
    other = write_series(tmp_path / "other", random_hu((3, 16, 16)), axial((3, 16, 16)), TAGS, "other")
    for path in other:
        shutil.move(path, folder / f"B{path.name}")
    uids = {
        str(pydicom.dcmread(p).SeriesInstanceUID): len(list(folder.glob(f"{'B' if p.name.startswith('B') else 'I'}*")))
        for p in folder.iterdir()
    }
    with pytest.raises(InputError, match="2 series in one folder: .*; choose one with --series UID") as err:
        read_series(folder)
    for uid, n in uids.items():  # each listed with its description and file count, the larger first
        assert re.search(re.escape(uid) + rf' \("no description", {n} files\)', err.value.problem)
    assert err.value.problem.index("4 files") < err.value.problem.index("3 files")
    for uid, n in uids.items():  # a chosen one is read alone
        assert read_series(folder, uid).hu.shape[0] == n
    with pytest.raises(InputError, match="holds no series 1.2.3"):
        read_series(folder, "1.2.3")


def test_single_slice(tmp_path: Path) -> None:
    write_series(tmp_path, random_hu((1, 16, 16)), axial((1, 16, 16)), TAGS, "one")
    with pytest.raises(InputError, match=r"only one slice \(IM00001\.dcm\)"):
        read_series(tmp_path)


def test_not_ct(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    edit(folder / "IM00002.dcm", Modality="MR")
    with pytest.raises(InputError, match=r"IM00002\.dcm: Modality is 'MR', expected 'CT'"):
        read_series(folder)


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_tag(series: tuple[Path, np.ndarray, Geometry], tag: str) -> None:
    folder, _, _ = series
    edit(folder / "IM00003.dcm", **{tag: None})
    with pytest.raises(InputError, match=rf"IM00003\.dcm: missing geometry tag\(s\): {tag}"):
        read_series(folder)


def test_multi_frame_is_rejected(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    edit(folder / "IM00001.dcm", NumberOfFrames=2)
    with pytest.raises(InputError, match=r"IM00001\.dcm: multi-frame DICOM is not supported"):
        read_series(folder)


def test_differing_orientation(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    edit(folder / "IM00003.dcm", ImageOrientationPatient=["0", "1", "0", "1", "0", "0"])
    with pytest.raises(InputError, match=r"IM00003\.dcm: ImageOrientationPatient .* differs from IM00001\.dcm"):
        read_series(folder)


def test_differing_pixel_spacing(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    edit(folder / "IM00004.dcm", PixelSpacing=["0.5", "0.4"])
    with pytest.raises(InputError, match=r"IM00004\.dcm: PixelSpacing \[0\.5, 0\.4\] differs from IM00001\.dcm"):
        read_series(folder)


def test_differing_matrix_size(series: tuple[Path, np.ndarray, Geometry], tmp_path: Path) -> None:
    folder, _, _ = series
    small = write_series(tmp_path / "small", random_hu((4, 8, 8)), axial((4, 8, 8)), TAGS, "series")
    shutil.move(small[1], folder / "IM00002.dcm")  # same series UID, 8x8 pixels
    with pytest.raises(InputError, match=r"IM00002\.dcm: Rows x Columns 8x8 differs from IM00001\.dcm's 16x16"):
        read_series(folder)


def test_non_orthonormal_orientation(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    for path in folder.iterdir():
        edit(path, ImageOrientationPatient=["1", "0", "0", "0.6", "0.8", "0"])
    with pytest.raises(InputError, match=r"IM00001\.dcm: ImageOrientationPatient .* not two orthogonal unit"):
        read_series(folder)


def test_missing_slice(tmp_path: Path) -> None:
    write_series(tmp_path, random_hu((6, 8, 8)), axial((6, 8, 8)), TAGS, "gap")
    (tmp_path / "IM00003.dcm").unlink()
    with pytest.raises(
        InputError,
        match=r"missing slice\(s\) between IM00002\.dcm and IM00004\.dcm: "
        r"gap of 1 mm, expected 0\.5 mm",
    ) as err:
        read_series(tmp_path)
    assert err.value.where == str(tmp_path)


def test_duplicate_position(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    edit(folder / "IM00003.dcm", ImagePositionPatient=pydicom.dcmread(folder / "IM00002.dcm").ImagePositionPatient)
    with pytest.raises(InputError, match=r"duplicate slice position: IM0000[23]\.dcm and IM0000[23]\.dcm"):
        read_series(folder)


def test_non_uniform_steps(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, geometry = series
    edit(folder / "IM00002.dcm", ImagePositionPatient=[str(v) for v in geometry.slice_position(1) + [0, 0, 0.1]])
    expected = r"non-uniform slice spacing: 0\.6 mm between IM00001\.dcm and IM00002\.dcm, median 0\.5 mm"
    with pytest.raises(InputError, match=expected):
        read_series(folder)


def test_small_step_jitter_is_tolerated(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, hu, geometry = series
    edit(folder / "IM00002.dcm", ImagePositionPatient=[str(v) for v in geometry.slice_position(1) + [0, 0, 0.001]])
    series = read_series(folder)
    got_geometry = series.geometry
    assert got_geometry.matches(geometry, tol_mm=0.01)


def test_sheared_stack(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, geometry = series
    edit(folder / "IM00004.dcm", ImagePositionPatient=[str(v) for v in geometry.slice_position(3) + [0.2, 0, 0]])
    with pytest.raises(InputError, match=r"IM00004\.dcm: slice position is 0\.2 mm off the slice normal"):
        read_series(folder)


def test_corrupt_header_value(series: tuple[Path, np.ndarray, Geometry]) -> None:
    folder, _, _ = series
    path = folder / "IM00002.dcm"
    data = path.read_bytes()
    assert data.count(b"0.4\\0.4") == 1
    path.write_bytes(data.replace(b"0.4\\0.4", b"0.4\\x.4"))
    with pytest.raises(InputError, match=r"IM00002\.dcm: corrupt DICOM header: could not convert string to float"):
        read_series(folder)
