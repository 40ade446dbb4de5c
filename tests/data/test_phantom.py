"""The synthetic CCTA phantom: determinism, physics, case mix, raw layout and atomic cohort writing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from plaque.classes import CALCIFIED, LUMEN, NONCALCIFIED, WALL
from plaque.config import load_config
from plaque.data.phantom import CASE_MIX, generate_case, generate_cohort, sample_spec
from plaque.data.phantom import case as case_module
from plaque.data.phantom.__main__ import main
from plaque.data.phantom.render import apply_psf, correlated_noise, render_ellipsoid
from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.io.patient import PHANTOM_MARKER, is_phantom

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
SEED = 11


@pytest.fixture(scope="module")
def cfg() -> dict:
    """The resolved phantom section of the smoke profile (matrix 96)."""
    c = load_config(PARAMS, "smoke")["phantom"]
    assert c["matrix"] == 96
    return c


def first_index(cfg: dict, case_type: str, seed: int = SEED) -> int:
    return next(i for i in range(200) if sample_spec(i, seed, cfg).case_type == case_type)


@pytest.fixture(scope="module")
def mixed_case(cfg: dict):
    """A rendered patient whose vessel holds a mixed (calcified + non-calcified) plaque."""
    return generate_case(first_index(cfg, "mixed"), SEED, cfg)


def test_deterministic_per_seed_and_index(cfg: dict) -> None:
    a, b, other = generate_case(0, SEED, cfg), generate_case(0, SEED, cfg), generate_case(1, SEED, cfg)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.tags == b.tags and a.truth == b.truth
    assert a.geometry.matches(b.geometry)
    assert a.tags["PatientID"] != other.tags["PatientID"]
    assert a.hu.shape != other.hu.shape or not np.array_equal(a.hu, other.hu)
    assert generate_case(0, SEED + 1, cfg).tags != a.tags


def test_volume_types_labels_and_geometry(cfg: dict, mixed_case) -> None:
    c = mixed_case
    assert c.hu.dtype == np.float32 and c.labels.dtype == np.uint8
    assert c.hu.shape == c.labels.shape == c.geometry.shape
    assert c.hu.shape[1:] == (cfg["matrix"], cfg["matrix"])
    assert set(np.unique(c.labels)) <= {0, 1, 2, 3, 4}
    for cls in (WALL, LUMEN, CALCIFIED, NONCALCIFIED):
        assert (c.labels == cls).sum() > 0, cls
    dz, dy, dx = c.geometry.spacing
    sc = cfg["scanner"]
    assert sc["pixel_mm"][0] <= dx == dy <= sc["pixel_mm"][1]
    assert sc["increment_mm"][0] <= dz <= sc["increment_mm"][1]
    assert 30.0 <= c.truth["segment_mm"] <= 52.0
    assert c.truth["case_type"] == "mixed" and any(p["kind"] == "mixed" for p in c.truth["plaques"])


def test_wall_is_thin_and_lumen_tapers(mixed_case) -> None:
    c = mixed_case
    lumen, wall = c.labels == LUMEN, c.labels == WALL
    # A thin wall: hardly any wall voxel lies more than ~3 pixels from non-wall tissue.
    depth = ndimage.distance_transform_edt(wall)
    assert np.quantile(depth[wall], 0.95) <= 3.0
    # Proximal (top slices) lumen wider than distal (bottom slices).
    per_slice = lumen.sum(axis=(1, 2))
    n = len(per_slice) // 5
    assert per_slice[-n:].mean() > 1.2 * per_slice[:n].mean()


def test_hu_by_class_in_expected_ranges(cfg: dict, mixed_case) -> None:
    c = mixed_case
    lumen_hu = c.truth["scanner"]["lumen_hu"]
    core = ndimage.binary_erosion(c.labels == LUMEN)
    assert abs(c.hu[core].mean() - lumen_hu) < 0.15 * lumen_hu
    wall = c.hu[c.labels == WALL].mean()
    assert 0.0 < wall < 0.5 * lumen_hu
    calc = c.hu[c.labels == CALCIFIED].mean()
    assert calc > wall + 100
    # Fat ring 1.5-3 mm outside the vessel: negative HU, near the sampled fat mean.
    d = ndimage.distance_transform_edt(c.labels == 0, sampling=c.geometry.spacing)
    ring = (d > 1.5) & (d < 3.0)
    assert np.median(c.hu[ring]) < 0
    assert abs(np.median(c.hu[ring]) - c.truth["fat_hu"]) < 40


def test_non_calcified_plaque_is_close_to_wall_and_fat(cfg: dict) -> None:
    i = first_index(cfg, "non_calcified")
    c = generate_case(i, SEED, cfg, noise=False)
    ncp = c.labels == NONCALCIFIED
    assert ncp.sum() > 0
    for p in c.truth["plaques"]:
        assert -20.0 <= p["ncp_hu"] <= 150.0
    # Without noise, NCP voxels sit far below the lumen: intensity must be told from context.
    assert np.median(c.hu[ncp]) < 0.6 * c.truth["scanner"]["lumen_hu"]


def test_calcium_blooming_from_psf() -> None:
    g = Geometry.axial((40, 40, 40), np.zeros(3), (0.4, 0.4, 0.4))
    background = np.full(g.shape, -80.0, np.float32)
    flat, delta, inside = render_ellipsoid(
        g, background, np.array([8.0, 8.0, 8.0]), np.full(3, 0.8), np.eye(3), 1000.0, factor=3
    )
    obj = background.copy()
    obj.ravel()[flat] += delta
    assert obj.max() <= 1000.0 + 1e-3 and obj.max() > 500
    blurred = apply_psf(obj, g, fwhm_xy_mm=0.7, fwhm_z_mm=0.8, thickness_mm=0.6)
    ratio = (blurred > 130).sum() / inside.sum()
    assert 1.5 <= ratio <= 5.0
    assert blurred.max() < 1000.0
    # Area integration preserves the mean attenuation (partial volume, no painted halo).
    assert abs((obj - background).sum() * 0.064 - 1080.0 * (4 / 3) * np.pi * 0.8**3) < 0.05 * 1080 * 2.145


def test_correlated_noise_sd_and_correlation(cfg: dict) -> None:
    rng = np.random.default_rng(0)
    n = correlated_noise(rng, (48, 64, 64), (0.4, 0.35, 0.35), sd_hu=30.0, corr_mm=0.4)
    flat_region = n[8:-8, 16:-16, 16:-16]
    assert abs(flat_region.std() - 30.0) < 0.2 * 30.0
    assert np.corrcoef(n[:, :, 1:].ravel(), n[:, :, :-1].ravel())[0, 1] > 0.3
    # In a rendered case, the noise (case minus its noise-free rendering) has the sampled SD.
    noisy, clean = generate_case(2, SEED, cfg), generate_case(2, SEED, cfg, noise=False)
    diff = (noisy.hu - clean.hu)[4:-4, 10:-10, 10:-10]
    target = noisy.truth["scanner"]["noise_sd_hu"]
    assert abs(diff.std() - target) < 0.2 * target


def test_centerline_runs_through_lumen_and_volume(cfg: dict) -> None:
    hits, total = 0, 0
    for i in range(3):
        c = generate_case(i, SEED + 3, cfg, noise=False)
        pts = c.centerlines["LAD"]
        kji = c.geometry.world_to_index(pts)
        idx = np.rint(kji).astype(int)
        assert np.all((idx >= 0) & (idx < np.array(c.geometry.shape)))
        hits += int((c.labels[tuple(idx.T)] == LUMEN).sum())
        total += len(pts)
        # Proximal to distal, top slab to bottom slab, oblique (not parallel to z).
        assert kji[0, 0] > c.geometry.shape[0] - 2 and kji[-1, 0] < 1
        tang = np.diff(pts, axis=0)
        assert np.degrees(np.arccos(np.abs(tang[:, 2]) / np.linalg.norm(tang, axis=1))).max() > 3.0
        # In-plane margin for 64-pixel cross-sections.
        n = cfg["matrix"]
        assert kji[:, 1:].min() >= 30 - 0.5 and kji[:, 1:].max() <= n - 1 - 30 + 0.5
    assert hits / total > 0.95


def test_case_mix_frequencies(cfg: dict) -> None:
    n = 3000
    counts = Counter(sample_spec(i, 5, cfg).case_type for i in range(n))
    for name, p in CASE_MIX.items():
        assert abs(counts[name] / n - p) < 0.03, (name, counts[name] / n)


def test_sampled_parameters_within_ranges(cfg: dict) -> None:
    sc = cfg["scanner"]
    for i in range(200):
        s = sample_spec(i, 3, cfg)
        k = s.scanner
        assert k.kv in sc["kv_mix"]
        assert sc["noise_sd_hu"][0] <= k.noise_sd_hu <= sc["noise_sd_hu"][1]
        assert sc["psf_fwhm_xy_mm"][0] <= k.psf_fwhm_xy_mm <= sc["psf_fwhm_xy_mm"][1]
        assert {80: (500, 700), 100: (400, 600), 120: (290, 380)}[k.kv][0] <= k.lumen_hu
        assert 3.0 <= s.lumen_prox_mm <= 4.5 and 1.5 <= s.lumen_dist_mm <= 2.5 and 0.5 <= s.wall_mm <= 1.0
        assert -120 <= s.surroundings.fat_hu <= -50 and 70 <= s.surroundings.myo_hu <= 130
        for p in s.plaques:
            assert 3.0 - 1e-9 <= p.length_mm <= 20.0
            assert 1.0 - 1e-9 <= p.remodelling <= 1.4 + 1e-9 and p.burden <= 0.8 + 1e-9
            assert 0.0 <= p.s_mm - p.length_mm / 2 and p.s_mm + p.length_mm / 2 <= s.segment_mm
            if p.ncp_type == "lipid":
                assert -20 <= p.ncp_hu <= 30
            if p.kind in ("calcified", "mixed"):
                assert 400 <= p.calcium_hu <= 1500


def test_identifying_tags_look_real(cfg: dict) -> None:
    tags = [generate_case(i, SEED, cfg, noise=False).tags for i in range(2)]
    for t in tags:
        assert "^" in t["PatientName"] and t["PatientName"].isupper()
        assert t["PatientID"].isdigit() and 7 <= len(t["PatientID"]) <= 8
        assert len(t["PatientBirthDate"]) == 8 and t["PatientSex"] in ("M", "F")
        assert t["StudyDescription"] == "CCTA" and t["KVP"] in ("80", "100", "120")
        for key in (
            "AccessionNumber",
            "InstitutionName",
            "ReferringPhysicianName",
            "StudyDate",
            "StudyTime",
            "ConvolutionKernel",
            "Manufacturer",
            "SliceThickness",
        ):
            assert t[key]
    assert tags[0]["PatientID"] != tags[1]["PatientID"]


def test_cohort_is_the_same_for_any_process_count(tmp_path: Path, cfg: dict) -> None:
    """Byte for byte, cohort.json included: the worker count is how fast, not what is drawn."""
    one, two = tmp_path / "one", tmp_path / "two"
    generate_cohort(one, 2, SEED, {**cfg, "processes": 1}, processes=1)
    generate_cohort(two, 2, SEED, {**cfg, "processes": "auto"}, processes=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert len(files) > 10
    assert [f for f in files if (one / f).read_bytes() != (two / f).read_bytes()] == []


def test_cohort_raw_layout_round_trip(tmp_path: Path, cfg: dict) -> None:
    out = tmp_path / "raw"
    cases = generate_cohort(out, 2, SEED, cfg, processes=2)
    assert [c["case"] for c in cases] == ["case_000", "case_001"]
    assert sorted(p.name for p in out.iterdir()) == [PHANTOM_MARKER, "case_000", "case_001", "cohort.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary siblings left
    summary = (out / "cohort.json").read_text()
    assert json.loads(summary)["cases"] == json.loads(json.dumps(cases))
    for i in range(2):
        c = generate_case(i, SEED, cfg)
        folder = out / f"case_{i:03d}"
        for key in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "PatientBirthDate"):
            assert c.tags[key] not in summary
        files = sorted((folder / "dicom").glob("*.dcm"))
        assert len(files) == c.geometry.shape[0]
        dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
        hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
        np.testing.assert_array_equal(hu, np.rint(c.hu + np.float32(1024.0)) - 1024.0)  # int16 + intercept
        assert str(dss[0].PatientName) == c.tags["PatientName"] and dss[0].PatientID == c.tags["PatientID"]
        assert len({d.SeriesInstanceUID for d in dss}) == 1
        for k in (0, len(dss) - 1):
            np.testing.assert_allclose(
                [float(v) for v in dss[k].ImagePositionPatient], c.geometry.slice_position(k), atol=1e-3
            )
        np.testing.assert_allclose([float(v) for v in dss[0].PixelSpacing], c.geometry.spacing[1:], atol=1e-6)
        img = nib.load(str(folder / "label.nii.gz"))
        np.testing.assert_allclose(img.affine, c.geometry.nifti_affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), c.labels)
        cl = json.loads((folder / "centerline.json").read_text())
        np.testing.assert_allclose(np.array(cl["LAD"]), c.centerlines["LAD"], atol=1e-3)


def _fail_on_index_one(real):
    def generate(index, seed, cfg, **kw):
        if index == 1:
            raise RuntimeError("boom")
        return real(index, seed, cfg, **kw)

    return generate


def test_cohort_is_atomic(tmp_path: Path, cfg: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(case_module, "generate_case", _fail_on_index_one(case_module.generate_case))
    out = tmp_path / "raw"
    with pytest.raises(RuntimeError, match="boom"):
        generate_cohort(out, 3, SEED, cfg, processes=1)
    assert list(tmp_path.iterdir()) == []
    # An existing cohort survives a failed regeneration untouched.
    out.mkdir()
    (out / PHANTOM_MARKER).write_text("")
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        generate_cohort(out, 3, SEED, cfg, processes=1)
    assert [p.name for p in tmp_path.iterdir()] == ["raw"] and (out / "keep.txt").read_text() == "old"
    # A successful run replaces it.
    monkeypatch.undo()
    generate_cohort(out, 1, SEED, cfg, processes=1)
    assert sorted(p.name for p in out.iterdir()) == [PHANTOM_MARKER, "case_000", "cohort.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_cohort_never_replaces_a_folder_it_did_not_write(tmp_path: Path, cfg: dict) -> None:
    own = tmp_path / "raw"
    (own / "patient_a" / "dicom").mkdir(parents=True)
    (own / "patient_a" / "dicom" / "IM1.dcm").write_bytes(b"scan")
    with pytest.raises(InputError, match="did not write"):
        generate_cohort(own, 1, SEED, cfg, processes=1)
    assert (own / "patient_a" / "dicom" / "IM1.dcm").read_bytes() == b"scan"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_cohort(empty, 1, SEED, cfg, processes=1)
    assert is_phantom(empty)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert (
        main(["--out", str(out), "--params", str(PARAMS), "--profile", "smoke", "--patients", "1", "--seed", "4"]) == 0
    )
    assert (out / "case_000" / "label.nii.gz").exists()
    assert main(["--out", str(out), "--params", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert main(["--out", str(out), "--params", str(PARAMS), "--patients", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: patients")
    assert (out / "case_000" / "label.nii.gz").exists()  # failed runs leave the previous cohort alone
