"""DICOM as scanners and PACS send it: compressed transfer syntaxes decode to the same Hounsfield units."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from plaque.io.dicom import read_series, write_series
from tests.io.factories import TAGS, axial, random_hu


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda s: s.name)
def test_a_compressed_series_reads_as_the_uncompressed_one(tmp_path: Path, syntax: pydicom.uid.UID) -> None:
    hu, geometry = random_hu((3, 64, 64)), axial((3, 64, 64))  # JPEG 2000's wavelet levels need some size
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    write_series(plain, hu, geometry, TAGS, "series")
    packed.mkdir()
    for path in sorted(plain.iterdir()):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(packed / path.name, enforce_file_format=True)
    assert pydicom.dcmread(next(packed.iterdir())).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_series(packed).hu, read_series(plain).hu)


def test_a_scanners_jpeg_2000_ct_decodes_to_its_hounsfield_units(tmp_path: Path) -> None:
    """pydicom's bundled CT slice in JPEG 2000, stacked into a three-slice series."""
    source = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
    series_uid = generate_uid()
    for k in range(3):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = series_uid, generate_uid(), k + 1
        ds.ImagePositionPatient = [float(v) for v in source.ImagePositionPatient[:2]] + [47.0 + k]
        ds.save_as(tmp_path / f"{k}.dcm")
    series = read_series(tmp_path)
    expected = source.pixel_array.astype(np.float32) * float(source.RescaleSlope) + float(source.RescaleIntercept)
    assert series.hu.shape == (3, 512, 512) and series.geometry.spacing[0] == pytest.approx(1.0)
    np.testing.assert_array_equal(series.hu[1], expected)
    assert all("PixelData" not in h for h in series.headers)  # headers kept, pixels dropped


def test_jpeg_lossless_decodes() -> None:
    """JPEG lossless (process 14, selection value 1), pydicom's bundled file: the same pixels as its RLE twin."""
    jpeg = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"))
    assert jpeg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    np.testing.assert_array_equal(jpeg.pixel_array, pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm")).pixel_array)
