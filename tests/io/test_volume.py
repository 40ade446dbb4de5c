"""NIfTI and NRRD volumes: the grid in LPS patient coordinates, the same checks as for DICOM."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.io.volume import read_image, read_volume
from tests.io.factories import SHAPE, axial, flipped_oblique, random_hu, write_nifti, write_nrrd

GRIDS = {"axial": axial, "flipped oblique": flipped_oblique}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize(
    "write",
    [
        lambda p, v, g: write_nifti(p / "image.nii.gz", v, g),
        lambda p, v, g: write_nrrd(p / "image.nrrd", v, g),
        lambda p, v, g: write_nrrd(p / "image.nrrd", v, g, "right-anterior-superior"),
    ],
    ids=["nifti", "nrrd-lps", "nrrd-ras"],
)
def test_volume_reads_back_its_grid_and_values(tmp_path: Path, grid: str, write) -> None:
    geometry, hu = GRIDS[grid](), random_hu().astype(np.int16)
    series = read_image(write(tmp_path, hu, geometry))
    assert series.geometry.matches(geometry, tol_mm=1e-5)
    np.testing.assert_allclose(series.geometry.spacing, geometry.spacing)
    assert series.hu.dtype == np.float32 and series.hu.shape == SHAPE
    np.testing.assert_array_equal(series.hu, hu)
    assert series.headers == [] and set(series.identity.values()) == {""}


def test_nifti_voxel_lies_where_its_ras_affine_says(tmp_path: Path) -> None:
    """RAS affine -> LPS grid: the voxel at NIfTI (i, j, k) lies at LPS (-x, -y, z) of its RAS position."""
    volume = np.zeros(SHAPE, np.int16)
    volume[2, 5, 9] = 1
    affine = np.diag([0.4, 0.5, 0.6, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    img = nib.Nifti1Image(volume.transpose(2, 1, 0), affine)
    nib.save(img, str(tmp_path / "v.nii"))
    data, geometry = read_volume(tmp_path / "v.nii")
    ras = affine @ np.array([9, 5, 2, 1.0])
    ((k, j, i),) = np.argwhere(data == 1)
    np.testing.assert_allclose(geometry.index_to_world(np.array([k, j, i])), [-ras[0], -ras[1], ras[2]])


def _nifti(path: Path, affine: np.ndarray) -> Path:
    """A NIfTI file whose sform is ``affine`` (no qform: it cannot hold a singular or sheared affine)."""
    img = nib.Nifti1Image(random_hu().astype(np.int16).transpose(2, 1, 0), None)
    img.set_qform(None, code=0)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def test_singular_affine_is_named(tmp_path: Path) -> None:
    affine = np.diag([0.4, 0.4, 0.0, 1.0])
    with pytest.raises(InputError, match=r"s\.nii\.gz: the affine is not invertible"):
        read_volume(_nifti(tmp_path / "s.nii.gz", affine))


def test_sheared_grid_is_refused(tmp_path: Path) -> None:
    affine = np.diag([0.4, 0.4, 0.5, 1.0])
    affine[0, 2] = 0.2  # slices step sideways: a gantry tilt
    with pytest.raises(InputError, match=r"s\.nii\.gz: the grid axes are not orthogonal"):
        read_volume(_nifti(tmp_path / "s.nii.gz", affine))


def test_nifti_without_sform_or_qform_is_refused(tmp_path: Path) -> None:
    img = nib.Nifti1Image(random_hu().astype(np.int16).transpose(2, 1, 0), None)
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "n.nii.gz"))
    with pytest.raises(InputError, match=r"n\.nii\.gz: .*neither sform nor qform"):
        read_volume(tmp_path / "n.nii.gz")


def test_truncated_nifti_is_named(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "t.nii.gz", random_hu().astype(np.int16), axial())
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(InputError, match=r"t\.nii\.gz: cannot read NIfTI"):
        read_volume(path)


def test_not_3d_is_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), str(tmp_path / "4d.nii"))
    with pytest.raises(InputError, match=r"4d\.nii: expected a 3D volume"):
        read_volume(tmp_path / "4d.nii")


def test_one_slice_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "one.nii.gz", np.zeros((1, 8, 8), np.int16), axial((1, 8, 8)))
    with pytest.raises(InputError, match=r"one\.nii\.gz: only 1 slice"):
        read_volume(path)


def test_nrrd_without_patient_space_is_refused(tmp_path: Path) -> None:
    nrrd.write(str(tmp_path / "v.nrrd"), np.zeros((4, 4, 3), np.int16))
    with pytest.raises(InputError, match=r"v\.nrrd: NRRD space None is not patient coordinates"):
        read_volume(tmp_path / "v.nrrd")


def test_nrrd_in_other_units_is_refused(tmp_path: Path) -> None:
    header = {
        "space": "left-posterior-superior",
        "space directions": np.eye(3),
        "space origin": np.zeros(3),
        "space units": ["cm", "cm", "cm"],
    }
    nrrd.write(str(tmp_path / "v.nrrd"), np.zeros((4, 4, 3), np.int16), header)
    with pytest.raises(InputError, match=r"v\.nrrd: NRRD space units \['cm', 'cm', 'cm'\]: expected mm"):
        read_volume(tmp_path / "v.nrrd")


def test_corrupt_nrrd_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.nrrd").write_bytes(b"NRRD0004\ntype: short\n")
    with pytest.raises(InputError, match=r"c\.nrrd: cannot read NRRD"):
        read_volume(tmp_path / "c.nrrd")


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"x\.nii\.gz: volume file not found"):
        read_volume(tmp_path / "x.nii.gz")
    (tmp_path / "x.mha").write_text("")
    with pytest.raises(InputError, match=r"x\.mha: expected a volume file"):
        read_volume(tmp_path / "x.mha")


def test_geometry_type(tmp_path: Path) -> None:
    _, geometry = read_volume(write_nrrd(tmp_path / "v.nrrd", np.zeros(SHAPE, np.int16), axial()))
    assert isinstance(geometry, Geometry) and geometry.shape == SHAPE
