"""read_labels and read_centerlines: round trips, remapping, and one test per bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.io.labels import read_centerlines, read_labels, write_centerlines, write_labels
from tests.io.factories import SHAPE, axial, flipped_oblique, random_labels

IDENTITY = {v: v for v in range(5)}


def save_nifti(path: Path, data_ijk: np.ndarray, affine: np.ndarray) -> None:
    """Write raw ``[i, j, k, ...]`` data with ``affine`` as sform and qform."""
    img = nib.Nifti1Image(data_ijk, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))


@pytest.mark.parametrize("geometry", [axial(), flipped_oblique()], ids=["axial", "flipped_oblique"])
def test_round_trip(tmp_path: Path, geometry: Geometry) -> None:
    labels = random_labels()
    write_labels(tmp_path / "label.nii.gz", labels, geometry)
    got = read_labels(tmp_path / "label.nii.gz", geometry, IDENTITY)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)


def test_uncompressed_nifti(tmp_path: Path) -> None:
    labels = random_labels()
    write_labels(tmp_path / "label.nii", labels, axial())
    np.testing.assert_array_equal(read_labels(tmp_path / "label.nii", axial(), IDENTITY), labels)


def test_remapping_table(tmp_path: Path) -> None:
    source = np.zeros(SHAPE, dtype=np.int16)
    source[0, 0, :5] = [0, 1, 2, 7, 300]
    save_nifti(tmp_path / "l.nii.gz", source.transpose(2, 1, 0), axial().nifti_affine)
    got = read_labels(tmp_path / "l.nii.gz", axial(), {0: 0, 1: 2, 2: 1, 7: 3, 300: 4})
    np.testing.assert_array_equal(got[0, 0, :5], [0, 2, 1, 3, 4])
    assert (got[1:] == 0).all()


def test_trailing_singleton_axis_and_integer_floats(tmp_path: Path) -> None:
    labels = random_labels()
    data = labels.transpose(2, 1, 0)[..., None].astype(np.float32)
    save_nifti(tmp_path / "l.nii.gz", data, axial().nifti_affine)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY), labels)


def test_grid_within_tolerance_is_accepted(tmp_path: Path) -> None:
    affine = axial().nifti_affine.copy()
    affine[:3, 3] += 0.005
    save_nifti(tmp_path / "l.nii.gz", random_labels().transpose(2, 1, 0), affine)
    assert read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY).shape == SHAPE


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"label\.nii\.gz: label file not found"):
        read_labels(tmp_path / "label.nii.gz", axial(), IDENTITY)


def test_not_a_volume_suffix(tmp_path: Path) -> None:
    (tmp_path / "label.mha").write_bytes(b"ObjectType = Image\n")
    with pytest.raises(InputError, match=r"label\.mha: expected a NIfTI or NRRD label file"):
        read_labels(tmp_path / "label.mha", axial(), IDENTITY)


@pytest.mark.parametrize("name", ["label.nii.gz", "label.nii"])
def test_truncated_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_labels(path, random_labels(), axial())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match=rf"{name}: cannot read NIfTI \(truncated or corrupt\)"):
        read_labels(path, axial(), IDENTITY)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "label.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(InputError, match=r"label\.nii\.gz: cannot read NIfTI"):
        read_labels(path, axial(), IDENTITY)


def test_non_integer_values(tmp_path: Path) -> None:
    data = random_labels().transpose(2, 1, 0).astype(np.float32)
    data[1, 2, 3], data[0, 0, 0] = 0.5, np.nan
    save_nifti(tmp_path / "l.nii.gz", data, axial().nifti_affine)
    with pytest.raises(InputError, match=r"l\.nii\.gz: label values must be integers, found \[0\.5, nan\]"):
        read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY)


def test_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    write_labels(tmp_path / "l.nii.gz", random_labels((4, 16, 12)), axial((4, 16, 12)))
    with pytest.raises(
        InputError,
        match=r"l\.nii\.gz: label shape \(Z, Y, X\) \(4, 16, 12\) .*differs from the "
        r"image grid \(4, 16, 16\)",
    ):
        read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY)


def test_five_dimensional_volume(tmp_path: Path) -> None:
    save_nifti(tmp_path / "l.nii.gz", np.zeros((16, 16, 4, 2), np.uint8), axial().nifti_affine)
    with pytest.raises(InputError, match=r"expected a 3D label volume, got shape \(16, 16, 4, 2\)"):
        read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY)


def test_shifted_grid_says_by_how_much(tmp_path: Path) -> None:
    affine = axial().nifti_affine.copy()
    affine[:3, 3] += [0.3, 0.0, 0.4]
    save_nifti(tmp_path / "l.nii.gz", random_labels().transpose(2, 1, 0), affine)
    with pytest.raises(InputError, match=r"l\.nii\.gz: label grid differs from the image grid by 0\.5 mm at a corner"):
        read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY)


def test_flipped_slice_order_is_a_grid_mismatch(tmp_path: Path) -> None:
    geometry = axial()
    flipped = Geometry(
        geometry.shape,
        geometry.slice_position(3),
        geometry.row_dir,
        geometry.col_dir,
        -geometry.slice_dir,
        geometry.spacing,
    )
    write_labels(tmp_path / "l.nii.gz", random_labels(), flipped)
    with pytest.raises(InputError, match=r"differs from the image grid by 1\.5 mm"):
        read_labels(tmp_path / "l.nii.gz", geometry, IDENTITY)


def test_missing_affine_is_hinted(tmp_path: Path) -> None:
    img = nib.Nifti1Image(random_labels().transpose(2, 1, 0), None)
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "l.nii.gz"))
    with pytest.raises(InputError, match=r"neither sform nor qform"):
        read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY)


def test_values_not_in_label_map(tmp_path: Path) -> None:
    data = random_labels().transpose(2, 1, 0)
    data[0, 0, 0], data[1, 0, 0], data[2, 0, 0] = 9, 5, 3
    save_nifti(tmp_path / "l.nii.gz", data, axial().nifti_affine)
    with pytest.raises(InputError, match=r"l\.nii\.gz: label values not in the label map: \[5, 9\]"):
        read_labels(tmp_path / "l.nii.gz", axial(), IDENTITY)
    with pytest.raises(InputError, match=r"label values not in the label map: \[3\]"):
        read_labels(tmp_path / "l.nii.gz", axial(), {0: 0, 1: 1, 2: 2, 4: 4, 5: 3, 9: 3})


def test_centerline_round_trip(tmp_path: Path) -> None:
    lines = {"LAD": np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]]), "RCA": np.array([[0, 0, 0], [0, 0, 1.25], [0, 1, 2]])}
    write_centerlines(tmp_path / "c.json", lines)
    got = read_centerlines(tmp_path / "c.json")
    assert sorted(got) == ["LAD", "RCA"]
    for name, points in lines.items():
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], points)


def test_centerline_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c\.json: centerline file not found"):
        read_centerlines(tmp_path / "c.json")


def test_centerline_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"LAD": [[1, 2, 3],\n [4, 5')
    with pytest.raises(InputError, match=r"c\.json: invalid JSON at line 2"):
        read_centerlines(tmp_path / "c.json")


@pytest.mark.parametrize(
    "content",
    [
        [[1, 2, 3], [4, 5, 6]],
        {},
        {"LAD": {"points": [[1, 2, 3]]}},
        {"LAD": [[1, 2], [3, 4]]},
        {"LAD": [[1, 2, 3], [4, "5", 6]]},
        {"LAD": [[1, 2, 3], [4, True, 6]]},
    ],
    ids=["list", "empty", "nested_object", "pairs", "string", "bool"],
)
def test_centerline_wrong_structure(tmp_path: Path, content: object) -> None:
    (tmp_path / "c.json").write_text(json.dumps(content))
    with pytest.raises(InputError, match=r"c\.json: (expected a non-empty object|vessel 'LAD': expected a list of)"):
        read_centerlines(tmp_path / "c.json")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_centerline_non_finite(tmp_path: Path, bad: str) -> None:
    (tmp_path / "c.json").write_text(f'{{"RCA": [[1, 2, 3], [4, {bad}, 6]]}}')
    with pytest.raises(InputError, match=r"c\.json: vessel 'RCA': non-finite coordinate"):
        read_centerlines(tmp_path / "c.json")


@pytest.mark.parametrize("points", [[], [[1, 2, 3]]])
def test_centerline_too_few_points(tmp_path: Path, points: list) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"LCX": points}))
    with pytest.raises(InputError, match=rf"c\.json: vessel 'LCX': {len(points)} point\(s\), need at least 2"):
        read_centerlines(tmp_path / "c.json")
