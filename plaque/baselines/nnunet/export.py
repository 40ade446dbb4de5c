"""Our processed slices -> nnU-Net's raw dataset layout.

Export (`export_dataset`): one nnU-Net case per (patient, vessel) stack of cross-sections, slices in manifest
order, as a 3-D NIfTI whose SimpleITK/nnU-Net array is ``(N, H, W)`` (nibabel array ``(W, H, N)``) with voxel
spacing ``(spacing_mm, spacing_mm, step_mm)`` (x, y, z). Intensities go back to Hounsfield units inside the
preprocessing window (``x · (hi − lo) + lo``, float32) under the channel name ``CT``, so nnU-Net applies its own
CT normalisation; labels are uint8 class ids. Train and val patients' cases go to ``imagesTr``/``labelsTr``,
test patients' cases only to ``imagesTs``. Case identifiers are ``<patient pseudonym>_<vessel>`` (characters
outside ``[A-Za-z0-9-]`` in the vessel name become ``-``): nothing but what the manifest already holds.

``splits_final.json`` (`splits_for`, `write_splits`, `check_splits`) holds one fold, our patient-level split.

nnU-Net predicts the test cases through the inference layer (`plaque.baselines.nnunet.predictor`), which gives
it the same stacks in the same units.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from plaque.classes import CLASS_NAMES, NUM_CLASSES
from plaque.data.processed import Processed
from plaque.errors import InputError

FILE_ENDING = ".nii.gz"
CHANNEL = "CT"
SPLITS_FILE = "splits_final.json"
TRAIN_SPLITS = ("train", "val")
_NAME = re.compile(r"^[A-Za-z0-9-]+$")


@dataclass(frozen=True)
class Case:
    """One nnU-Net case: a (patient, vessel) stack of cross-sections.

    Attributes:
        case: the nnU-Net case identifier.
        patient: the patient's pseudonym.
        split: ``train``, ``val`` or ``test``.
        rows: ``(N,)`` int64 manifest rows of the stack's slices, in manifest order.
        spacing_mm: in-plane pixel spacing of the stored slices.
    """

    case: str
    patient: str
    split: str
    rows: np.ndarray
    spacing_mm: float


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's dataset folder name, ``DatasetXXX_<name>``."""
    if not 1 <= int(dataset_id) <= 999:
        raise InputError("nnunet.dataset_id", f"{dataset_id!r} is not in 1..999")
    if not re.fullmatch(r"[A-Za-z0-9]+", name):
        raise InputError("nnunet.dataset_name", f"{name!r} must be letters and digits only")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _vessel_tag(vessel: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9-]", "-", str(vessel)).strip("-")
    return tag or "vessel"


def cases_of(processed: Processed) -> list[Case]:
    """The (patient, vessel) stacks of ``processed``, in order of their first manifest row.

    Raises:
        InputError: a patient in more than one split, a stack whose slices have different pixel spacings
            (more than 1 % apart), two stacks with the same identifier, a pseudonym that is not ``[A-Za-z0-9-]``,
            or a split without patients (train, val and test all need one).
    """
    manifest = processed.manifest
    splits = manifest.groupby("patient", sort=False)["split"].unique()
    mixed = [p for p, s in splits.items() if len(s) != 1]
    if mixed:
        raise InputError("manifest.csv", f"patient {mixed[0]} has slices in more than one split")
    cases: list[Case] = []
    seen: dict[str, tuple[str, str]] = {}
    for (patient, vessel), group in manifest.groupby(["patient", "vessel"], sort=False):
        patient = str(patient)
        if not _NAME.match(patient):
            raise InputError(
                "manifest.csv", f"patient pseudonym {patient!r} has characters nnU-Net file names cannot hold"
            )
        case = f"{patient}_{_vessel_tag(vessel)}"
        if case in seen:
            raise InputError(
                "manifest.csv",
                f"vessels {seen[case][1]!r} and {vessel!r} of patient {patient} both map to the nnU-Net case {case}",
            )
        seen[case] = (patient, str(vessel))
        spacing = group["spacing_mm"].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(spacing)) or spacing.min() <= 0:
            raise InputError("manifest.csv", f"case {case}: spacing_mm must be positive numbers")
        if spacing.max() > spacing.min() * 1.01:
            raise InputError(
                "manifest.csv",
                f"case {case}: pixel spacing varies within the stack "
                f"({spacing.min():.4g}..{spacing.max():.4g} mm); one NIfTI cannot hold it",
            )
        cases.append(
            Case(
                case,
                patient,
                str(group["split"].iloc[0]),
                group["index"].to_numpy(dtype=np.int64),
                float(np.median(spacing)),
            )
        )
    for split in ("train", "val", "test"):
        if not any(c.split == split for c in cases):
            raise InputError(
                "manifest.csv", f"no patient in split {split!r}; nnU-Net needs train, val and test patients"
            )
    return cases


def to_hu(images: np.ndarray, window_hu: Sequence[float]) -> np.ndarray:
    """Windowed intensities in [0, 1] back to Hounsfield units in ``window_hu``, float32."""
    lo, hi = float(window_hu[0]), float(window_hu[1])
    return (np.asarray(images, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(np.float32)


def from_hu(hu: np.ndarray, window_hu: Sequence[float]) -> np.ndarray:
    """The inverse of `to_hu`."""
    lo, hi = float(window_hu[0]), float(window_hu[1])
    return ((np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def write_stack(path: Path, stack: np.ndarray, spacing_mm: float, step_mm: float) -> None:
    """Write ``(N, H, W)`` as a NIfTI whose nnU-Net (SimpleITK) array is ``(N, H, W)``: nibabel ``(W, H, N)``,
    voxel size (spacing, spacing, step)."""
    affine = np.diag([spacing_mm, spacing_mm, step_mm, 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(np.transpose(stack, (2, 1, 0))), affine)
    image.header.set_data_dtype(stack.dtype)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def read_stack(path: Path) -> np.ndarray:
    """Read a NIfTI written by `write_stack` (or nnU-Net's prediction of one) back as ``(N, H, W)``."""
    data = np.asanyarray(nib.load(path).dataobj)
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D NIfTI, got shape {data.shape}")
    return np.transpose(data, (2, 1, 0))


def dataset_json(num_training: int) -> dict:
    """nnU-Net's ``dataset.json``: one CT channel, our five classes."""
    return {
        "channel_names": {"0": CHANNEL},
        "labels": {name: c for c, name in enumerate(CLASS_NAMES)},
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
        "name": "plaque",
        "description": "cross-sections along coronary centerlines, one case per (patient, vessel); plaque.baselines.nnunet",
    }


def export_dataset(processed: Processed, folder: Path, window_hu: Sequence[float], step_mm: float) -> list[Case]:
    """Write nnU-Net's raw dataset (``imagesTr``, ``labelsTr``, ``imagesTs``, ``dataset.json``) into ``folder``
    (created; must not exist yet) and return the cases (`cases_of`)."""
    cases = cases_of(processed)
    folder = Path(folder)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    for c in cases:
        images = to_hu(processed.images[c.rows], window_hu)
        if c.split in TRAIN_SPLITS:
            write_stack(folder / "imagesTr" / f"{c.case}_0000{FILE_ENDING}", images, c.spacing_mm, step_mm)
            labels = np.asarray(processed.labels[c.rows], dtype=np.uint8)
            if labels.max(initial=0) >= NUM_CLASSES:
                raise InputError("labels.npy", f"case {c.case}: class id {labels.max()} outside 0..{NUM_CLASSES - 1}")
            write_stack(folder / "labelsTr" / f"{c.case}{FILE_ENDING}", labels, c.spacing_mm, step_mm)
        else:
            write_stack(folder / "imagesTs" / f"{c.case}_0000{FILE_ENDING}", images, c.spacing_mm, step_mm)
    n_train = sum(c.split in TRAIN_SPLITS for c in cases)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(n_train), indent=2))
    return cases


def splits_for(cases: Sequence[Case]) -> list[dict[str, list[str]]]:
    """``splits_final.json`` content: one fold, train = the train patients' cases, val = the val patients'."""
    return [
        {
            "train": sorted(c.case for c in cases if c.split == "train"),
            "val": sorted(c.case for c in cases if c.split == "val"),
        }
    ]


def write_splits(folder: Path, splits: list[dict[str, list[str]]]) -> Path:
    """Write ``folder/splits_final.json`` (folder = nnU-Net's preprocessed dataset folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SPLITS_FILE
    path.write_text(json.dumps(splits, indent=2))
    return path


def check_splits(folder: Path, expected: list[dict[str, list[str]]], fold: int = 0) -> None:
    """Fail unless ``folder/splits_final.json`` exists and its fold ``fold`` is ``expected[fold]``: nnU-Net silently
    trains on a random 80:20 split when the file lacks the fold.

    Raises:
        InputError: the file is missing, unreadable, lacks the fold, or its fold differs from ours.
    """
    path = Path(folder) / SPLITS_FILE
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "missing; nnU-Net would train on a random split") from None
    except ValueError as e:
        raise InputError(path, f"unreadable ({e})") from None
    if not isinstance(found, list) or len(found) <= fold or not isinstance(found[fold], dict):
        raise InputError(path, f"has no fold {fold}; nnU-Net would train on a random split")
    got = {k: sorted(found[fold].get(k, [])) for k in ("train", "val")}
    want = {k: sorted(expected[fold][k]) for k in ("train", "val")}
    if got != want:
        raise InputError(path, f"fold {fold} is not our patient-level split")


def split_counts(cases: Sequence[Case]) -> Mapping[str, int]:
    """Number of cases per split."""
    return {s: sum(c.split == s for c in cases) for s in ("train", "val", "test")}
