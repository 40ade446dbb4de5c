"""Segmenting new scans: the mapping back to voxels is faithful, outputs lie on the scan's grid, bad input
writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.fileset import FileSet

from plaque.checkpoint import save_atomic
from plaque.classes import LUMEN, WALL
from plaque.config import load_config
from plaque.data.centerline_scores import best_match
from plaque.data.phantom import generate_cohort
from plaque.data.slicing import sample
from plaque.errors import InputError
from plaque.inference import load_predictor
from plaque.io.dicom import read_series
from plaque.io.geometry import Geometry
from plaque.io.labels import write_centerlines
from plaque.io.markups import read_curves
from plaque.io.patient import CENTERLINE_FILE, DICOM_DIR, LABEL_FILE, load_patient
from plaque.models.vessel import build_vessel_net, vessel_record
from plaque.segment.__main__ import main
from plaque.segment.run import (
    CENTERLINES_DIR,
    DERIVED,
    LABELS_FILE,
    MAPPING_FILE,
    RUN_FILE,
    SEG_FILE,
    VOLUMES_FILE,
    segment,
)
from plaque.segment.vessels import VesselFinder
from plaque.segment.volume import FALLBACK, Sections, cuts, to_voxels
from tests.checkpoints import untrained_checkpoint
from tests.io.factories import write_nifti, write_nrrd

IDENTITY = {i: i for i in range(5)}


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(profile="smoke")


@pytest.fixture(scope="module")
def raw(cfg: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three smoke phantom patients (labels kept: the tests compare with them; segmenting ignores them)."""
    out = tmp_path_factory.mktemp("segment") / "raw"
    generate_cohort(out, 3, seed=5, cfg=cfg["phantom"], processes=1)
    return out


@pytest.fixture(scope="module")
def checkpoint(cfg: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained no_prior model in the trainer's format, cross-sections every 2 mm."""
    settings = {k: cfg["preprocess"][k] for k in ("window_hu", "crop_px", "size")} | {"step_mm": 2.0}
    return untrained_checkpoint(cfg, "no_prior", settings, tmp_path_factory.mktemp("model") / "best.pt")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_ground_truth_cross_sections_map_back_onto_the_label_volume(raw: Path, cfg: dict) -> None:
    """The geometry round trip: each patient's ground-truth cross-sections, cut as segmentation cuts them and
    mapped back, reproduce its label volume."""
    for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
        patient = load_patient(folder, IDENTITY)
        sections = [
            Sections(
                c, np.zeros(c.coords.shape[:1] + c.coords.shape[2:], np.float32), sample(patient.labels, c.coords, 0)
            )
            for c in cuts(patient.geometry, patient.centerlines, cfg["preprocess"]["crop_px"], 1.0)
        ]
        labels, owner = to_voxels(patient.geometry, sections)
        assert dice(labels == LUMEN, patient.labels == LUMEN) >= 0.95, folder.name
        assert dice(labels == WALL, patient.labels == WALL) >= 0.90, folder.name
        assert (owner[labels > 0] >= 0).all()


def test_segment_writes_labels_seg_volumes_and_mapping_on_the_scans_grids(
    raw: Path, checkpoint: Path, tmp_path: Path
) -> None:
    cohort = tmp_path / "scans"
    for folder in sorted(p for p in raw.iterdir() if p.is_dir())[:2]:
        shutil.copytree(folder / DICOM_DIR, cohort / folder.name / DICOM_DIR)
    shutil.copy(raw / "case_000" / CENTERLINE_FILE, cohort / "case_000" / CENTERLINE_FILE)  # case_001: none
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoint), "--input", str(cohort), "--out", str(out), "--axial-tiles"]
    assert main([*args, "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MAPPING_FILE, VOLUMES_FILE, RUN_FILE, "scan_001", "scan_002"]
    )
    for name, folder in (("scan_001", "case_000"), ("scan_002", "case_001")):
        series = read_series(cohort / folder / DICOM_DIR)
        image = nib.load(out / name / LABELS_FILE)
        np.testing.assert_allclose(image.affine, series.geometry.nifti_affine, atol=1e-4)
        labels = np.asarray(image.dataobj).transpose(2, 1, 0)
        assert labels.shape == series.geometry.shape and labels.max() <= 4
        seg = hd.seg.segread(out / name / SEG_FILE)
        assert seg.get_source_image_uids()[0][1] == series.identity["SeriesInstanceUID"]
        from_seg = np.zeros(labels.shape, np.uint8)
        for number in seg.segment_numbers:
            frames = seg.get_pixels_by_source_instance(
                [h.SOPInstanceUID for h in series.headers],
                segment_numbers=[number],
                assert_missing_frames_are_empty=True,
            )[..., 0]
            from_seg[frames > 0] = number
        np.testing.assert_array_equal(from_seg, labels)
        assert pydicom.dcmread(out / name / SEG_FILE).FrameOfReferenceUID == series.headers[0].FrameOfReferenceUID
        assert (out / name / "overlay.png").stat().st_size > 0
    volumes = pd.read_csv(out / VOLUMES_FILE)
    first = volumes[volumes["scan"] == "scan_001"]
    assert list(first["vessel"]) == ["LAD", "all"] and set(first["cut"]) == {"centerline"}
    assert set(volumes[volumes["scan"] == "scan_002"]["cut"]) == {FALLBACK}
    whole = first[first["vessel"] == "all"].iloc[0]
    assert whole["plaque_mm3"] == pytest.approx(whole["calcified_mm3"] + whole["non_calcified_mm3"], abs=1e-2)
    run = json.loads((out / RUN_FILE).read_text())
    assert [s["cut"] for s in run["scans"]] == ["centerline", FALLBACK] and run["method"] == "no_prior"
    mapping = pd.read_csv(out / MAPPING_FILE)
    assert list(mapping["input"]) == [str((cohort / f / DICOM_DIR).resolve()) for f in ("case_000", "case_001")]
    for path in (out / VOLUMES_FILE, out / RUN_FILE):
        assert "case_00" not in path.read_text()  # input folder names only in the local mapping


def test_one_series_with_a_centerline_option(raw: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "--checkpoint",
        str(checkpoint.parent),
        "--input",
        str(raw / "case_002" / DICOM_DIR),
        "--out",
        str(out),
        "--centerline",
        str(raw / "case_002" / CENTERLINE_FILE),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert json.loads((out / RUN_FILE).read_text())["scans"][0]["vessels"] == ["LAD"]
    labels = np.asarray(nib.load(out / "scan_001" / LABELS_FILE).dataobj)
    assert labels.shape == nib.load(raw / "case_002" / LABEL_FILE).shape


def _fails_cleanly(args: list[str], out: Path, capsys: pytest.CaptureFixture[str], where: Path, problem: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, when one ran
    assert err.startswith(f"error: {where}") and problem in err and "Traceback" not in err, err
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(
    raw: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", "--axial-tiles"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_cleanly([*base, "--input", str(empty)], out, capsys, empty, "empty")
    gap = tmp_path / "gap" / "p1" / DICOM_DIR
    shutil.copytree(raw / "case_000" / DICOM_DIR, gap)
    files = sorted(gap.iterdir())
    files[len(files) // 2].unlink()
    shutil.copytree(raw / "case_001", tmp_path / "gap" / "p0")  # a good scan first: still nothing written
    _fails_cleanly([*base, "--input", str(tmp_path / "gap")], out, capsys, gap, "missing")
    line = tmp_path / "outside.json"
    write_centerlines(line, {"LAD": np.array([[0.0, 0.0, 0.0], [1e4, 1e4, 1e4]])})
    _fails_cleanly(
        [*base, "--input", str(raw / "case_000" / DICOM_DIR), "--centerline", str(line)], out, capsys, line, "outside"
    )
    _fails_cleanly(
        ["--checkpoint", str(tmp_path / "none.pt"), "--out", str(out), "--input", str(raw)],
        out,
        capsys,
        tmp_path / "none.pt",
        "",
    )


def test_volumes_dicomdir_and_stray_files_give_the_dicom_labels_voxel_for_voxel(
    raw: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """One phantom scan as a patient folder (DICOM), as NIfTI and NRRD volumes in a folder with stray files
    (centerlines from the first run's Slicer markups), and as a media export with a DICOMDIR: the same labels."""
    base = ["--checkpoint", str(checkpoint), "--device", "cpu"]
    assert main([*base, "--input", str(raw / "case_002"), "--out", str(tmp_path / "dicom")]) == 0
    scan = tmp_path / "dicom" / "scan_001"
    expected = np.asarray(nib.load(scan / LABELS_FILE).dataobj)
    assert (scan / SEG_FILE).is_file() and (scan / CENTERLINES_DIR / "LAD.mrk.json").is_file()

    series = read_series(raw / "case_002" / DICOM_DIR)
    cohort = tmp_path / "volumes"
    for name, image in (("a", "image.nii.gz"), ("b", "image.nrrd")):
        (cohort / name).mkdir(parents=True)
        write = write_nifti if image.endswith(".nii.gz") else write_nrrd
        write(cohort / name / image, series.hu.astype(np.int16), series.geometry)
        shutil.copytree(scan / CENTERLINES_DIR, cohort / name / CENTERLINES_DIR)
    for stray in ("cohort.json", "README.txt"):
        (cohort / stray).write_text("{}")
    assert main([*base, "--input", str(cohort), "--out", str(tmp_path / "vol")]) == 0
    for name in ("scan_001", "scan_002"):
        image = nib.load(tmp_path / "vol" / name / LABELS_FILE)
        np.testing.assert_array_equal(np.asarray(image.dataobj), expected)
        np.testing.assert_allclose(image.affine, series.geometry.nifti_affine, atol=1e-4)
        assert not (tmp_path / "vol" / name / SEG_FILE).exists()

    fs = FileSet()
    for path in sorted((raw / "case_002" / DICOM_DIR).iterdir()):
        fs.add(path)
    fs.write(tmp_path / "cd")
    line = ["--centerline", str(raw / "case_002" / CENTERLINE_FILE)]
    assert main([*base, "--input", str(tmp_path / "cd"), *line, "--out", str(tmp_path / "cd-out")]) == 0
    np.testing.assert_array_equal(
        np.asarray(nib.load(tmp_path / "cd-out" / "scan_001" / LABELS_FILE).dataobj), expected
    )


def test_a_volume_with_a_singular_affine_is_one_line_and_nothing_is_written(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), None)
    img.set_qform(None, code=0)
    img.set_sform(np.diag([0.5, 0.5, 0.0, 1.0]), code=1)
    path = tmp_path / "scan.nii.gz"
    nib.save(img, str(path))
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoint), "--input", str(path), "--out", str(out), "--device", "cpu"]
    _fails_cleanly([*args, "--axial-tiles"], out, capsys, path, "the affine is not invertible")


class TruthFinder(VesselFinder):
    """A vessel model that answers with the scan's true vessel (or nothing): what segmenting does with a mask."""

    def __init__(self, truth: np.ndarray) -> None:
        super().__init__(torch.nn.Identity(), {}, Path("truth"), torch.device("cpu"))
        self.truth = truth

    def mask(self, hu: np.ndarray, geometry: Geometry) -> np.ndarray:
        assert hu.shape == geometry.shape == self.truth.shape
        return self.truth


def test_a_scan_alone_is_cut_along_centerlines_derived_from_the_vessel_mask(
    raw: Path, checkpoint: Path, tmp_path: Path
) -> None:
    patient = load_patient(raw / "case_001", IDENTITY)
    scans = tmp_path / "scans"
    shutil.copytree(raw / "case_001" / DICOM_DIR, scans / "p" / DICOM_DIR)  # no centerline
    out = tmp_path / "out"
    predictor = load_predictor(checkpoint, "cpu")
    volumes = segment(predictor, scans, out, finder=TruthFinder(patient.labels > 0))
    run = json.loads((out / RUN_FILE).read_text())["scans"][0]
    assert run["cut"] == DERIVED and run["vessels"] == ["V1"] and set(volumes["cut"]) == {DERIVED}
    derived = read_curves(out / "scan_001" / CENTERLINES_DIR)
    _, score = best_match(patient.centerlines["LAD"], derived)
    assert score["overlap"] >= 0.95 and score["mean_mm"] <= 0.5
    labels = np.asarray(nib.load(out / "scan_001" / LABELS_FILE).dataobj).transpose(2, 1, 0)
    assert labels.shape == patient.labels.shape
    assert list(volumes["vessel"]) == ["V1", "all"]


def test_no_vessel_found_or_no_vessel_model_is_one_line_and_nothing_is_written(
    raw: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scans = tmp_path / "scans"
    shutil.copytree(raw / "case_000" / DICOM_DIR, scans / "p" / DICOM_DIR)
    out = tmp_path / "out"
    empty = TruthFinder(np.zeros(load_patient(raw / "case_000", IDENTITY).labels.shape, bool))
    with pytest.raises(InputError, match="the vessel model found no usable vessel"):
        segment(load_predictor(checkpoint, "cpu"), scans, out, finder=empty)
    assert not out.exists()
    base = ["--checkpoint", str(checkpoint), "--input", str(scans), "--out", str(out), "--device", "cpu"]
    missing = tmp_path / "none" / "best.pt"
    _fails_cleanly([*base, "--vessel-model", str(missing)], out, capsys, missing, "vessel model not found")
    _fails_cleanly([*base, "--vessel-model", str(checkpoint)], out, capsys, checkpoint, "is not a vessel model")
    untrained = tmp_path / "vessel" / "best.pt"
    net = build_vessel_net([4, 8], 1)
    with torch.no_grad():  # background everywhere: zero weights, the class-output biases favour background
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and m.out_channels == 2:
                m.bias.copy_(torch.tensor([10.0, -10.0]))
    settings = {"spacing_mm": 0.5, "channels": [4, 8], "res_units": 1, "patch": 32, "threshold": 0.5}
    save_atomic(vessel_record(net.state_dict(), settings, (-300.0, 1300.0)), untrained)
    _fails_cleanly(
        [*base, "--vessel-model", str(untrained.parent)], out, capsys, untrained, "min_piece_fraction: made by an older"
    )
    settings["min_piece_fraction"] = 0.125
    save_atomic(vessel_record(net.state_dict(), settings, (-300.0, 1300.0)), untrained)
    _fails_cleanly(
        [*base, "--vessel-model", str(untrained.parent)], out, capsys, scans / "p" / DICOM_DIR, "no usable vessel"
    )
