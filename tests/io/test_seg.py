"""DICOM Segmentation output: read back with highdicom, it holds the label volume on the source slices."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from plaque.classes import CALCIFIED, LUMEN, NONCALCIFIED, WALL
from plaque.io.dicom import read_series
from plaque.io.seg import SEGMENTS, write_segmentation
from tests.io.factories import random_labels


def _readback(path: Path, headers: list, shape: tuple[int, int, int]) -> np.ndarray:
    """The ``(Z, Y, X)`` class volume a Segmentation file holds, in the order of ``headers``."""
    seg = hd.seg.segread(path)
    volume = np.zeros(shape, dtype=np.uint8)
    for number in seg.segment_numbers:
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[h.SOPInstanceUID for h in headers],
            segment_numbers=[number],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        volume[frames > 0] = number
    return volume


def test_segmentation_reads_back_as_the_label_volume(series: tuple, tmp_path: Path) -> None:
    folder, _, geometry = series
    scan = read_series(folder)
    labels = random_labels(geometry.shape, seed=3)
    path = write_segmentation(tmp_path / "seg.dcm", labels, scan.headers, geometry, algorithm="ours", version="1.0")
    np.testing.assert_array_equal(_readback(path, scan.headers, geometry.shape), labels)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG"
    assert ds.StudyInstanceUID == scan.identity["StudyInstanceUID"]
    assert ds.FrameOfReferenceUID == scan.headers[0].FrameOfReferenceUID
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [
        SEGMENTS[c][0] for c in (WALL, LUMEN, CALCIFIED, NONCALCIFIED)
    ]
    assert float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices) == 0.5
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_classes_are_still_described(series: tuple, tmp_path: Path) -> None:
    folder, _, geometry = series
    scan = read_series(folder)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    labels[1, 4:8, 4:8] = LUMEN
    path = write_segmentation(tmp_path / "seg.dcm", labels, scan.headers, geometry, algorithm="ours", version="1.0")
    np.testing.assert_array_equal(_readback(path, scan.headers, geometry.shape), labels)
    assert len(pydicom.dcmread(path).SegmentSequence) == 4
