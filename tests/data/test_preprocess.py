"""End-to-end preprocessing of small synthetic cohorts: outputs, splits, de-identification, atomicity."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from plaque.config import load_config
from plaque.data.phantom import generate_cohort
from plaque.data.preprocess import TEST_ONLY, main, preprocess
from plaque.data.processed import load_processed
from plaque.data.pseudonym import KEY_ENV, pseudonym, pseudonym_key, scan_names
from plaque.errors import InputError
from plaque.io.dicom import read_series, write_series
from plaque.io.geometry import Geometry
from plaque.io.labels import write_centerlines, write_labels
from plaque.io.patient import CENTERLINE_FILE, DICOM_DIR, LABEL_FILE, PHANTOM_MARKER
from tests.io.factories import write_nifti, write_nrrd

REPO = Path(__file__).resolve().parents[2]
SHAPE = (24, 40, 40)
CFG: dict[str, Any] = {
    "label_map": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},
    "window_hu": [-300.0, 1300.0],
    "crop_px": 16,
    "step_mm": 1.0,
    "size": 24,
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "split_seed": 0,
    "pseudonym_salt": "test-salt",
    "processes": 1,
}


def tags(n: int) -> dict[str, str]:
    """Realistic-looking identifying tags; every value is distinctive enough to search for."""
    return {
        "PatientID": f"MRN-ZQ{n:04d}77",
        "PatientName": f"Quxworth^Millicent{n}",
        "PatientBirthDate": f"1953110{n}",
        "AccessionNumber": f"ACCZQ{n:05d}",
        "InstitutionName": "Saint Quxworth Heart Institute",
        "PatientSex": "F",
    }


def folder_name(n: int) -> str:
    return f"QUXWORTH_MILLICENT_{n:03d}"


def tube_axis(n: int) -> tuple[Geometry, np.ndarray, np.ndarray]:
    """Patient ``n``'s grid and the two LPS mm end points of its straight, tilted vessel."""
    geom = Geometry.axial(SHAPE, origin=np.array([-8.0 + n, 4.0, -6.0]), spacing=(0.5, 0.4, 0.4))
    return (
        geom,
        geom.index_to_world(np.array([2.0, 14.0 + n % 3, 16.0])),
        geom.index_to_world(np.array([21.0, 24.0, 22.0 - n % 2])),
    )


def write_patient(
    folder: Path,
    n: int,
    *,
    centerline: bool = True,
    foreground: bool = True,
    subject: int | None = None,
    study_date: str = "",
) -> None:
    """A tilted tube (lumen 2 in a wall 1, a calcified spot 3) in a small noisy axial volume; ``subject``
    (default ``n``) picks the identifying tags, so that two folders can hold scans of one patient."""
    geom, a, b = tube_axis(n)
    line = a + np.linspace(0.0, 1.0, 200)[:, None] * (b - a)
    kji = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    xyz = geom.index_to_world(kji)
    d = b - a
    t = np.clip((xyz - a) @ d / (d @ d), 0.0, 1.0)
    dist = np.linalg.norm(xyz - (a + t[:, None] * d), axis=1).reshape(SHAPE)
    labels = np.zeros(SHAPE, np.uint8)
    if foreground:
        labels[dist < 2.0] = 1
        labels[dist < 1.2] = 2
        labels[10:12, 18:20, 20:23][labels[10:12, 18:20, 20:23] == 1] = 3
    hu = np.choose(labels, [-80.0, 60.0, 420.0, 900.0, 20.0]) + np.random.default_rng(n).normal(0, 20, SHAPE)
    identity = {**tags(n if subject is None else subject), **({"StudyDate": study_date} if study_date else {})}
    write_series(folder / DICOM_DIR, hu, geom, identity, uid_seed=f"study-{n}")
    write_labels(folder / LABEL_FILE, labels, geom)
    if centerline:
        write_centerlines(folder / CENTERLINE_FILE, {"LAD": line, "RCA": line[::-1][:120]})


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven synthetic patients, marked as a phantom cohort (salt-keyed pseudonyms): five with centerlines, one
    without (centerlines derived from its labels), one without foreground."""
    root = tmp_path_factory.mktemp("cohort") / "raw"
    root.mkdir()
    (root / PHANTOM_MARKER).write_text("test cohort")
    for n in range(5):
        write_patient(root / folder_name(n), n)
    write_patient(root / folder_name(5), 5, centerline=False)
    write_patient(root / folder_name(6), 6, foreground=False)
    return root


@pytest.fixture(scope="module")
def run(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, str]:
    """One two-process run of the cohort: (out folder, summary, captured log text)."""
    out = tmp_path_factory.mktemp("processed") / "out"
    handler = _Capture()
    logging.getLogger("plaque").addHandler(handler)
    logging.getLogger("plaque").setLevel(logging.INFO)
    try:
        summary = preprocess(raw, out, CFG, processes=2)
    finally:
        logging.getLogger("plaque").removeHandler(handler)
    return out, summary, "\n".join(handler.lines)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def test_outputs_are_consistent(run: tuple[Path, Any, str]) -> None:
    out, summary, _ = run
    data = load_processed(out)
    n = len(data.manifest)
    assert data.images.shape == data.labels.shape == (n, 24, 24) and isinstance(data.images, np.memmap)
    assert data.images.dtype == np.float32 and data.labels.dtype == np.uint8
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert set(np.unique(data.labels)) <= {0, 1, 2, 3}
    counts = data.manifest[[f"count_{c}" for c in range(5)]].to_numpy()
    expected = np.stack([(np.asarray(data.labels) == c).sum(axis=(1, 2)) for c in range(5)], axis=1)
    np.testing.assert_array_equal(counts, expected)
    assert np.allclose(data.manifest["spacing_mm"], 0.4 * 16 / 24)
    assert set(data.manifest["vessel"]) == {"LAD", "RCA", "V1"}  # V1: derived from the labels of the patient without
    derived = data.manifest[data.manifest["vessel"] == "V1"]
    assert set(derived["centerline"]) == {"derived"} and set(data.manifest["centerline"]) == {"given", "derived"}
    assert [p.name for p in (out / "centerlines").iterdir()] == [derived["patient"].iloc[0]]
    assert (out / "centerlines" / derived["patient"].iloc[0] / "V1.mrk.json").is_file()
    assert (data.manifest["count_2"] > 0).mean() > 0.9  # cross-sections are centred on the lumen
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["slices_per_split"] == {s: int((data.manifest["split"] == s).sum()) for s in CFG["split"]}
    assert on_disk["patients_per_split"] == {"train": 4, "val": 1, "test": 1}
    strata = on_disk["strata_per_split"]
    assert {s: sum(v.values()) for s, v in strata.items()} == on_disk["patients_per_split"]
    for split, rows in data.manifest.groupby("split"):  # each patient's stratum matches its slices
        has_calcified = rows.groupby("patient")["count_3"].sum() > 0
        assert strata[split].get("calcified", 0) == int(has_calcified.sum())
        for c, name in ((1, "vessel_wall"), (3, "calcified"), (4, "non_calcified")):  # the power of each split
            assert on_disk["patients_with_class"][split][name] == int(
                (rows.groupby("patient")[f"count_{c}"].sum() > 0).sum()
            )
    assert on_disk["skipped_patients"] == {"no_foreground": 1, "no_slices_in_volume": 0}
    assert on_disk["derived_centerline_patients"] == 1 and on_disk["pseudonym_key"] == "params"
    assert on_disk["skipped_sections"] == summary.skipped_sections >= 0
    assert abs(sum(on_disk["class_fractions"].values()) - 1.0) < 1e-9
    # cross-section centres lie on the vessel axis, one step_mm apart along it
    rows = data.manifest[
        (data.manifest["patient"] == pseudonym(tags(0)["PatientID"], CFG["pseudonym_salt"]))
        & (data.manifest["vessel"] == "LAD")
    ]
    _, a, b = tube_axis(0)
    centers = rows[["center_x", "center_y", "center_z"]].to_numpy()
    along = (centers - a) @ (b - a) / np.linalg.norm(b - a)
    assert np.linalg.norm(centers - a - along[:, None] * (b - a) / np.linalg.norm(b - a), axis=1).max() < 1e-4
    np.testing.assert_allclose(along, rows["slice"].to_numpy() * CFG["step_mm"], atol=1e-4)


def test_no_patient_in_two_splits_and_rows_grouped(run: tuple[Path, Any, str]) -> None:
    out, _, _ = run
    data = load_processed(out)
    per_patient = data.manifest.groupby("patient")["split"].nunique()
    assert (per_patient == 1).all() and len(per_patient) == 6
    assert all(p.startswith("P") and len(p) == 11 for p in per_patient.index)
    splits = data.manifest["split"].tolist()
    assert splits == sorted(splits, key=list(CFG["split"]).index)  # grouped by split, in config order
    for split in CFG["split"]:
        idx = data.indices(split)
        assert (data.manifest.loc[idx, "split"] == split).all()
    assert sum(len(data.indices(s)) for s in CFG["split"]) == len(data.manifest)
    assert sorted(sum((data.patients(s) for s in CFG["split"]), [])) == sorted(per_patient.index)


def test_no_identifying_value_in_any_output_or_log(raw: Path, run: tuple[Path, Any, str]) -> None:
    out, _, log_text = run
    secrets = {folder_name(n) for n in range(7)}
    secrets |= {v for n in range(7) for k, v in tags(n).items() if k != "PatientSex"}
    secrets |= {"Quxworth", "Millicent", str(raw)}
    first_slice = (raw / folder_name(0) / DICOM_DIR / "IM00001.dcm").read_bytes()
    assert all(v.encode() in first_slice for v in tags(0).values())  # the fixture really carries them
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        blob = path.read_bytes().lower()
        for secret in secrets:
            assert secret.lower().encode() not in blob, (path.name, secret)
    assert "skipped" in log_text and "WARNING" in log_text
    for secret in secrets:
        assert secret.lower() not in log_text.lower()


def test_patient_without_foreground_is_skipped_with_a_warning(raw: Path, run: tuple[Path, Any, str]) -> None:
    _, summary, log_text = run
    assert summary.skipped_patients["no_foreground"] == 1
    empty = pseudonym(tags(6)["PatientID"], CFG["pseudonym_salt"])
    assert f"patient {empty}: no foreground" in log_text
    assert empty not in set(load_processed(run[0]).manifest["patient"])


def test_rerun_is_deterministic_and_replaces_out(raw: Path, run: tuple[Path, Any, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    preprocess(raw, out, CFG, processes=1)
    assert not (out / "stale.txt").exists()
    a, b = load_processed(run[0]), load_processed(out)
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_patient_among_good_ones_writes_nothing(raw: Path, tmp_path: Path) -> None:
    bad_raw = tmp_path / "raw"
    shutil.copytree(raw, bad_raw)
    victim = bad_raw / folder_name(2) / DICOM_DIR / "IM00005.dcm"
    victim.write_bytes(victim.read_bytes()[:400])
    with pytest.raises(InputError) as info:
        preprocess(bad_raw, tmp_path / "out", CFG, processes=2)
    assert info.value.where == str(victim) and "truncated" in info.value.problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("keep")
    with pytest.raises(InputError):
        preprocess(bad_raw, existing, CFG, processes=1)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "raw"]


def test_failure_while_writing_leaves_no_temp_folder(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = tmp_path / "out"
    existing.mkdir()
    (existing / "keep.txt").write_text("keep")

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError, match="No space"):
        preprocess(raw, existing, CFG, processes=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_duplicate_series_is_an_error(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "secret")
    dup_raw = tmp_path / "raw"
    for n in (0, 1, 2):
        shutil.copytree(raw / folder_name(n), dup_raw / folder_name(n))
    shutil.copytree(raw / folder_name(1), dup_raw / "copy")
    with pytest.raises(InputError, match="same SeriesInstanceUID"):
        preprocess(dup_raw, tmp_path / "out", CFG, processes=1)
    assert not (tmp_path / "out").exists()


def test_follow_up_scans_are_kept_named_by_date_and_split_together(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "secret")
    cohort = tmp_path / "raw"
    for n in range(5):
        shutil.copytree(raw / folder_name(n), cohort / folder_name(n))
    write_patient(cohort / "later", 8, subject=3, study_date="20250101")
    write_patient(cohort / "earlier", 9, subject=3, study_date="20190101")
    summary = preprocess(cohort, tmp_path / "out", CFG, processes=1)
    manifest = load_processed(tmp_path / "out").manifest
    subject = pseudonym(tags(3)["PatientID"], "secret")
    scans = manifest[manifest["patient"].str.startswith(subject)]
    assert set(scans["patient"]) == {f"{subject}-1", f"{subject}-2", f"{subject}-3"}
    assert scans["split"].nunique() == 1
    assert sum(summary.patients_per_split.values()) == 7
    assert scan_names(["a", "b", "a", "a"], ["20200101", "", "", "20100101"]) == ["a-2", "b", "a-3", "a-1"]


def test_real_data_needs_a_pseudonym_key(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    cohort = tmp_path / "raw"
    for n in range(5):
        shutil.copytree(raw / folder_name(n), cohort / folder_name(n))
    with pytest.raises(InputError, match=KEY_ENV):
        preprocess(cohort, tmp_path / "out", CFG, processes=1)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--raw",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(REPO / "params.yaml"),
            "--profile",
            "smoke",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {tmp_path / 'missing'}: raw data folder does not exist"]
    assert not (tmp_path / "out").exists()


def test_cli_runs_with_a_params_file(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["preprocess"].update(crop_px=16, size=16, step_mm=2.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = main(
        [
            "--raw",
            str(raw),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(tmp_path / "params.yaml"),
            "--profile",
            "smoke",
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = load_processed(tmp_path / "out")
    assert data.images.shape[1:] == (16, 16) and np.allclose(data.manifest["spacing_mm"], 0.4)


def test_load_processed_rejects_inconsistent_folders(run: tuple[Path, Any, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run[0], broken)
    manifest = pd.read_csv(broken / "manifest.csv")
    manifest.iloc[:-1].to_csv(broken / "manifest.csv", index=False)
    with pytest.raises(InputError, match=r"rows but the arrays hold"):
        load_processed(broken)
    (broken / "labels.npy").unlink()
    with pytest.raises(InputError, match=r"labels.npy: missing"):
        load_processed(broken)


def test_pseudonym_is_stable_keyed_and_not_the_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pid = "MRN-ZQ000177"
    p = pseudonym(pid, "key-a")
    assert p == pseudonym(pid, "key-a") and p != pseudonym(pid, "key-b") and p != pseudonym("MRN-ZQ000178", "key-a")
    assert len(p) == 11 and p[0] == "P" and int(p[1:], 16) >= 0 and pid not in p and "ZQ" not in p
    monkeypatch.setenv(KEY_ENV, "from-the-environment")
    assert pseudonym_key("salt", phantom=False) == ("from-the-environment", "env")
    monkeypatch.delenv(KEY_ENV)
    with caplog.at_level(logging.WARNING, logger="plaque"):
        assert pseudonym_key("salt", phantom=True) == ("salt", "params")
    assert KEY_ENV in caplog.text and "phantom" in caplog.text
    with pytest.raises(InputError, match="real patient data"):
        pseudonym_key("salt", phantom=False)


def test_phantom_cohort_end_to_end(tmp_path: Path) -> None:
    """The built-in phantom (smoke profile) through preprocessing; no DICOM identity reaches the outputs."""
    cfg = load_config(REPO / "params.yaml", "smoke")
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_cohort(raw, 3, seed=11, cfg=cfg["phantom"], processes=1)
    summary = preprocess(raw, out, cfg["preprocess"], processes=1)
    data = load_processed(out)
    assert summary.patients_per_split == {"train": 1, "val": 1, "test": 1}
    assert len(data.manifest) == sum(summary.slices_per_split.values()) > 0
    assert (data.manifest["count_2"] > 0).all()  # every cross-section is centred on the lumen
    secrets = {p.name for p in raw.iterdir() if p.is_dir()}
    for folder in raw.iterdir():
        if folder.is_dir():
            ds = pydicom.dcmread(next((folder / DICOM_DIR).iterdir()))
            secrets |= {
                str(ds.get(tag, ""))
                for tag in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName")
            }
    secrets.discard("")
    for path in out.iterdir():
        blob = path.read_bytes().lower()
        assert not [s for s in secrets if s.lower().encode() in blob], path.name


def test_a_cohort_of_volumes_gives_the_slices_of_its_dicom_twin(raw: Path, tmp_path: Path) -> None:
    """The cohort as NIfTI and NRRD volumes (a stray file at the top level): every patient's slices and labels
    are those of the DICOM cohort; only the pseudonyms (from folder names) differ."""
    volumes = tmp_path / "volumes"
    for n, folder in enumerate(sorted(p for p in raw.iterdir() if p.is_dir())):
        series = read_series(folder / DICOM_DIR)
        target = volumes / f"v{n}"
        target.mkdir(parents=True)
        write = write_nifti if n % 2 else write_nrrd
        write(target / ("image.nii.gz" if n % 2 else "image.nrrd"), series.hu.astype(np.int16), series.geometry)
        shutil.copy(folder / LABEL_FILE, target / LABEL_FILE)
        if (folder / CENTERLINE_FILE).exists():
            shutil.copy(folder / CENTERLINE_FILE, target / CENTERLINE_FILE)
    shutil.copy(raw / PHANTOM_MARKER, volumes / PHANTOM_MARKER)
    (volumes / "README.txt").write_text("notes")
    cfg = {**CFG, "split": TEST_ONLY}

    def slices(out: Path) -> set[bytes]:
        data = load_processed(out)
        return {
            data.images[rows].tobytes() + data.labels[rows].tobytes()
            for rows in data.manifest.groupby("patient").indices.values()
        }

    preprocess(raw, tmp_path / "dicom-out", cfg, processes=1)
    preprocess(volumes, tmp_path / "volume-out", cfg, processes=1)
    assert slices(tmp_path / "volume-out") == slices(tmp_path / "dicom-out")
