"""DICOM CT series: writing (phantom) and reading (user data), in Hounsfield units.

Reading decodes what scanners and PACS send: uncompressed, RLE, JPEG lossless, JPEG 2000 and JPEG-LS
transfer syntaxes (pydicom with the pylibjpeg plugins). A folder may hold several series: one is chosen
by its SeriesInstanceUID, and without a choice the error lists them (UID, description, files). A folder
holding a `DICOMDIR` (a CD or media export) is read through it: the CT images it lists, wherever they lie.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import FileSet
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, UncompressedTransferSyntaxes, generate_uid

from plaque.errors import InputError
from plaque.io.geometry import Geometry

DICOMDIR = "DICOMDIR"
RESCALE_INTERCEPT = -1024.0
RESCALE_SLOPE = 1.0


def _ds(v: float) -> str:
    """Format a float as a DICOM decimal string (at most 16 characters)."""
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.8e}"[:16]


def make_uid(*entropy: object) -> str:
    """A deterministic DICOM UID derived from ``entropy`` (same inputs, same UID)."""
    return generate_uid(entropy_srcs=[str(e) for e in entropy])


def _encode(ds: Dataset) -> list[tuple[int, bytes]]:
    """``ds``'s elements as ``(tag, bytes)`` pairs, each encoded as in an explicit VR little endian file."""
    encoded = []
    for element in ds:
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_data_element(buffer, element)
        encoded.append((int(element.tag), buffer.getvalue()))
    return encoded


def write_series(folder: Path, hu: np.ndarray, geometry: Geometry, tags: dict[str, str], uid_seed: str) -> list[Path]:
    """Write a CT volume as one DICOM series, one file per slice (explicit VR little endian).

    The elements every slice shares are encoded once; each file is its preamble and file meta information,
    then the shared and its own elements in tag order: the bytes ``pydicom``'s ``save_as`` writes for the
    same dataset (tested), at a third of the cost.

    Args:
        folder: output folder (created).
        hu: ``(Z, Y, X)`` Hounsfield units.
        geometry: grid of ``hu``.
        tags: patient/study tags by DICOM keyword (PatientName, PatientID, PatientBirthDate,
            PatientSex, AccessionNumber, InstitutionName, StudyDate, KVP, SliceThickness, ...).
        uid_seed: makes Study/Series/SOP/FrameOfReference UIDs deterministic.

    Returns:
        The written file paths, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.clip(np.rint((hu - RESCALE_INTERCEPT) / RESCALE_SLOPE), -32768, 32767).astype(np.int16)
    study_uid, series_uid, frame_uid = (make_uid(uid_seed, part) for part in ("study", "series", "frame"))
    iop = [float(v) for v in (*geometry.row_dir, *geometry.col_dir)]
    dz, dy, dx = geometry.spacing
    shared = Dataset()
    for key, value in tags.items():
        setattr(shared, key, value)
    shared.SOPClassUID = CTImageStorage
    shared.StudyInstanceUID = study_uid
    shared.SeriesInstanceUID = series_uid
    shared.FrameOfReferenceUID = frame_uid
    shared.Modality = "CT"
    shared.SeriesNumber = 1
    shared.ImageOrientationPatient = [_ds(v) for v in iop]
    shared.PixelSpacing = [_ds(dy), _ds(dx)]
    shared.SpacingBetweenSlices = _ds(dz)
    shared.Rows, shared.Columns = int(hu.shape[1]), int(hu.shape[2])
    shared.SamplesPerPixel = 1
    shared.PhotometricInterpretation = "MONOCHROME2"
    shared.BitsAllocated = shared.BitsStored = 16
    shared.HighBit = 15
    shared.PixelRepresentation = 1
    shared.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    shared.RescaleSlope = _ds(RESCALE_SLOPE)
    shared.RescaleType = "HU"
    shared.WindowCenter, shared.WindowWidth = "300", "1200"
    shared_bytes = _encode(shared)
    paths = []
    for k in range(hu.shape[0]):
        sop_uid = make_uid(uid_seed, "sop", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        head = DicomBytesIO()
        head.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(head, meta, enforce_standard=True)
        own = Dataset()
        own.SOPInstanceUID = sop_uid
        own.InstanceNumber = k + 1
        own.ImagePositionPatient = [_ds(v) for v in geometry.slice_position(k)]
        own.add_new(0x7FE00010, "OW", stored[k].tobytes())  # PixelData; OW for 16-bit pixels
        path = folder / f"IM{k + 1:05d}.dcm"
        path.write_bytes(head.getvalue() + b"".join(b for _, b in sorted(shared_bytes + _encode(own))))
        paths.append(path)
    return paths


IDENTITY_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate")
GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
ORIENTATION_TOL = 1e-4  # direction cosines, unitless
SPACING_TOL_MM = 1e-4  # PixelSpacing agreement between slices
GAP_FACTOR = 1.5  # a step above this multiple of the median step is a missing slice
STEP_TOL_REL, STEP_TOL_MM = 0.02, 0.005  # allowed step deviation: max(rel * median, abs)
SHEAR_TOL_PX = 0.1  # allowed in-plane drift of slice positions, in pixels


@dataclass(frozen=True)
class _Slice:
    """One slice file: its dataset and the header fields the reader uses (None where a tag is absent)."""

    path: Path
    dataset: Dataset
    series_uid: str | None
    modality: str
    position: np.ndarray | None  # (3,) ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # (6,) ImageOrientationPatient: row_dir, col_dir
    pixel_spacing: np.ndarray | None  # (2,) mm: (row spacing dy, column spacing dx)
    rows: int | None
    columns: int | None
    samples: int
    slope: float
    intercept: float
    identity: dict[str, str]


@dataclass
class Series:
    """A CT series read by `read_series`.

    Attributes:
        hu: ``(Z, Y, X)`` float32 Hounsfield units (RescaleSlope/RescaleIntercept applied).
        geometry: the grid.
        identity: ``{PatientID, StudyInstanceUID, SeriesInstanceUID, StudyDate}`` (identifying: only for
            pseudonyms, follow-up order and duplicate detection).
        headers: ``(Z,)`` the slices' DICOM datasets in slice order, pixel data dropped (what a DICOM
            Segmentation references).
    """

    hu: np.ndarray
    geometry: Geometry
    identity: dict[str, str]
    headers: list[Dataset]


def read_series(folder: Path, series: str | None = None) -> Series:
    """Read one CT series (one file per slice) into Hounsfield units.

    Slices are ordered by ImagePositionPatient along the slice normal
    (row_dir x col_dir), ascending, so ``slice_dir`` is that normal.

    Args:
        folder: folder holding the series' files (hidden files are ignored), or a `DICOMDIR` and the files
            it lists.
        series: the SeriesInstanceUID to read when the folder holds several series.

    Raises:
        InputError: naming the folder or file and the problem; for a folder of several series without
            ``series``, the list of its series.
    """
    folder = Path(folder)
    files = _dicomdir_files(folder / DICOMDIR) if (folder / DICOMDIR).is_file() else _list_files(folder)
    slices = _one_series(folder, [_read_file(p) for p in files], series)
    if len(slices) < 2:
        raise InputError(folder, f"only one slice ({slices[0].path.name}); a series needs at least 2")
    for s in slices:
        _check_tags(s)
    _check_consistent(slices)
    row_dir, col_dir = _orientation(slices[0])
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    slices.sort(key=lambda s: float(s.position @ normal))
    first = slices[0]
    dz = _slice_step(folder, slices, normal, float(first.pixel_spacing.min()))
    geometry = Geometry(
        shape=(len(slices), first.rows, first.columns),
        origin=first.position,
        row_dir=row_dir,
        col_dir=col_dir,
        slice_dir=normal,
        spacing=(dz, float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
    )
    hu = np.stack([_hu(s) for s in slices])
    for s in slices:
        del s.dataset.PixelData
    return Series(hu, geometry, first.identity, [s.dataset for s in slices])


def _list_files(folder: Path) -> list[Path]:
    """The non-hidden files of ``folder``, by name; a subfolder is an error."""
    if not folder.is_dir():
        raise InputError(folder, "DICOM folder does not exist")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for p in entries:
        if not p.is_file():
            raise InputError(p, "unexpected subfolder in a DICOM series folder (expected one file per slice)")
    if not entries:
        raise InputError(folder, "DICOM folder holds no files")
    return entries


def _dicomdir_files(path: Path) -> list[Path]:
    """The CT image files a DICOMDIR lists (series of another modality are left out), in record order."""
    try:
        ds = pydicom.dcmread(path)
        referenced = [r.ReferencedFileID for r in ds.DirectoryRecordSequence if r.get("ReferencedFileID")]
        missing = [f for f in (path.parent.joinpath(*_parts(r)) for r in referenced) if not f.is_file()]
        if missing:
            raise InputError(path, f"lists {len(missing)} file(s) that do not exist, e.g. {missing[0]}")
        instances = list(FileSet(ds))
    except InputError:
        raise
    except Exception as e:  # the parser and the File-set reader raise many exception types on bad input
        raise InputError(path, f"cannot read DICOMDIR: {_oneline(e)}") from None
    files = [Path(i.path) for i in instances if i.node.record_type == "IMAGE" and getattr(i, "Modality", "") == "CT"]
    if not files:
        raise InputError(path, "DICOMDIR lists no CT images")
    return files


def _parts(file_id: str | MultiValue) -> list[str]:
    """The path components of a ReferencedFileID (one value or several)."""
    return [str(v) for v in file_id] if isinstance(file_id, MultiValue) else [str(file_id)]


def _read_file(path: Path) -> _Slice:
    """Parse one slice file; it must be DICOM with complete, single-frame pixel data."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise InputError(path, "not a DICOM file") from None
    except Exception as e:  # the parser raises many exception types on corrupt or truncated input
        raise InputError(path, f"cannot read DICOM file (truncated or corrupt): {_oneline(e)}") from None
    try:
        s = _Slice(
            path=path,
            dataset=ds,
            series_uid=str(ds.SeriesInstanceUID) if ds.get("SeriesInstanceUID") else None,
            modality=str(ds.get("Modality") or ""),
            position=_floats(ds, "ImagePositionPatient"),
            orientation=_floats(ds, "ImageOrientationPatient"),
            pixel_spacing=_floats(ds, "PixelSpacing"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            samples=_int(ds, "SamplesPerPixel") or 1,
            slope=float(ds.RescaleSlope) if ds.get("RescaleSlope") not in (None, "") else 1.0,
            intercept=float(ds.RescaleIntercept) if ds.get("RescaleIntercept") not in (None, "") else 0.0,
            identity={tag: str(ds.get(tag) or "") for tag in IDENTITY_TAGS},
        )
        frames = _int(ds, "NumberOfFrames") or 1
        bits = _int(ds, "BitsAllocated")
        native = ds.file_meta.get("TransferSyntaxUID") in UncompressedTransferSyntaxes
        pixel_bytes = len(ds.PixelData) if "PixelData" in ds else None
    except Exception as e:  # values are decoded lazily, so a corrupt element only fails when read
        raise InputError(path, f"corrupt DICOM header: {_oneline(e)}") from None
    if pixel_bytes is None:
        raise InputError(path, "DICOM file has no pixel data (not an image, or truncated)")
    if frames > 1:
        raise InputError(path, "multi-frame DICOM is not supported; export the series as one file per slice")
    if native and None not in (s.rows, s.columns, bits):
        expected = s.rows * s.columns * s.samples * bits // 8
        if pixel_bytes < expected:
            raise InputError(path, f"truncated pixel data: {pixel_bytes} of {expected} bytes")
    return s


def _floats(ds: Dataset, keyword: str) -> np.ndarray | None:
    """A numeric tag's values as a float64 array, or None when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return np.array([float(v) for v in (value if isinstance(value, MultiValue) else [value])])


def _int(ds: Dataset, keyword: str) -> int | None:
    """An integer tag's value, or None when absent or empty."""
    value = ds.get(keyword)
    return None if value is None or value == "" else int(value)


def _oneline(e: Exception) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def _one_series(folder: Path, slices: list[_Slice], series: str | None) -> list[_Slice]:
    """The files of the one series in ``folder``, or of ``series`` when there are several.

    Raises:
        InputError: a file without SeriesInstanceUID, several series and no choice (they are listed), or a
            chosen series the folder does not hold.
    """
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        if s.series_uid is None:
            raise InputError(s.path, "missing SeriesInstanceUID")
        groups.setdefault(s.series_uid, []).append(s)
    if series is not None:
        if series not in groups:
            raise InputError(folder, f"holds no series {series}; it holds {_listing(groups)}")
        return groups[series]
    if len(groups) > 1:
        raise InputError(
            folder, f"{len(groups)} series in one folder: {_listing(groups)}; choose one with --series UID"
        )
    return next(iter(groups.values()))


def _listing(groups: dict[str, list[_Slice]]) -> str:
    """``UID ("description", N files)`` for each series, most files first."""
    order = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return "; ".join(
        f'{uid} ("{g[0].dataset.get("SeriesDescription", "") or "no description"}", {len(g)} files)' for uid, g in order
    )


def _check_tags(s: _Slice) -> None:
    """A CT slice with grey pixels and complete geometry tags."""
    if s.modality != "CT":
        raise InputError(s.path, f"Modality is {s.modality!r}, expected 'CT'")
    values = {
        "ImagePositionPatient": s.position,
        "ImageOrientationPatient": s.orientation,
        "PixelSpacing": s.pixel_spacing,
        "Rows": s.rows,
        "Columns": s.columns,
    }
    missing = [tag for tag in GEOMETRY_TAGS if values[tag] is None]
    if missing:
        raise InputError(s.path, f"missing geometry tag(s): {', '.join(missing)}")
    for tag, n in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
        if len(values[tag]) != n or not np.isfinite(values[tag]).all():
            raise InputError(s.path, f"{tag} must hold {n} finite numbers, got {values[tag].tolist()}")
    if s.pixel_spacing.min() <= 0 or s.rows < 1 or s.columns < 1:
        raise InputError(
            s.path, f"PixelSpacing {s.pixel_spacing.tolist()} and Rows x Columns {s.rows}x{s.columns} must be positive"
        )
    if s.samples != 1:
        raise InputError(s.path, f"expected greyscale pixels (SamplesPerPixel 1), got {s.samples}")


def _check_consistent(slices: list[_Slice]) -> None:
    """Orientation, pixel spacing and matrix size must equal the first file's."""
    ref = slices[0]
    name = ref.path.name
    for s in slices[1:]:
        if np.abs(s.orientation - ref.orientation).max() > ORIENTATION_TOL:
            raise InputError(
                s.path,
                f"ImageOrientationPatient {s.orientation.tolist()} differs from {name}'s {ref.orientation.tolist()}",
            )
        if np.abs(s.pixel_spacing - ref.pixel_spacing).max() > SPACING_TOL_MM:
            raise InputError(
                s.path, f"PixelSpacing {s.pixel_spacing.tolist()} differs from {name}'s {ref.pixel_spacing.tolist()}"
            )
        if (s.rows, s.columns) != (ref.rows, ref.columns):
            raise InputError(
                s.path, f"Rows x Columns {s.rows}x{s.columns} differs from {name}'s {ref.rows}x{ref.columns}"
            )


def _orientation(s: _Slice) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``row_dir`` and ``col_dir`` ``(3,)`` from ImageOrientationPatient; they must be orthonormal."""
    row, col = s.orientation[:3], s.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(s.path, f"ImageOrientationPatient {s.orientation.tolist()} is not two orthogonal unit vectors")
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _slice_step(folder: Path, slices: list[_Slice], normal: np.ndarray, pixel_mm: float) -> float:
    """Check that the sorted slices form a uniform stack along ``normal``; return the slice step (mm)."""
    positions = np.array([s.position for s in slices])
    names = [s.path.name for s in slices]
    along = (positions - positions[0]) @ normal
    steps = np.diff(along)
    median = float(np.median(steps))
    tol = max(STEP_TOL_REL * median, STEP_TOL_MM)
    for k, step in enumerate(steps):
        if step < tol:
            raise InputError(
                folder,
                f"duplicate slice position: {names[k]} and {names[k + 1]} "
                f"are {step:.4g} mm apart along the slice normal",
            )
    for k, step in enumerate(steps):
        if step > GAP_FACTOR * median:
            raise InputError(
                folder,
                f"missing slice(s) between {names[k]} and {names[k + 1]}: "
                f"gap of {step:.4g} mm, expected {median:.4g} mm",
            )
    for k, step in enumerate(steps):
        if abs(step - median) > tol:
            raise InputError(
                folder,
                f"non-uniform slice spacing: {step:.4g} mm between {names[k]} and "
                f"{names[k + 1]}, median {median:.4g} mm (tolerance {tol:.2g} mm)",
            )
    drift = np.linalg.norm(positions - positions[0] - along[:, None] * normal, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > SHEAR_TOL_PX * pixel_mm:
        raise InputError(
            slices[worst].path,
            f"slice position is {drift[worst]:.3g} mm off the slice normal "
            f"through {names[0]} (gantry tilt or sheared stack is not supported)",
        )
    return float(along[-1] / (len(along) - 1))


def _hu(s: _Slice) -> np.ndarray:
    """``(Y, X)`` float32 Hounsfield units of one slice."""
    try:
        stored = s.dataset.pixel_array
    except Exception as e:  # decoders raise many types (missing codec, corrupt stream)
        raise InputError(s.path, f"cannot decode pixel data: {_oneline(e)}") from None
    return (stored.astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)).astype(np.float32)
