"""DICOM Segmentation objects of a label volume, over the CT series it was made from (highdicom).

One segment per foreground class, labelled with the paper's class names, coded with SNOMED CT where a
code exists (lumen of artery, calcified atheromatous plaque, atheroma) and a local code for the vessel wall
(SNOMED CT has none for the coronary wall as annotated here), all in the coronary artery, and shown in the
paper's colours (white, blue, yellow, red, as CIELab). The Segmentation references every source instance
(one frame per CT slice that holds a segment), so viewers such as 3D Slicer and OHIF overlay it on the CT.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from plaque.classes import CALCIFIED, CLASS_COLOURS, LUMEN, NONCALCIFIED, WALL
from plaque.io.geometry import Geometry

logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every attribute module it copies

SEGMENTS: dict[int, tuple[str, Code, Code]] = {
    WALL: ("vessel wall", codes.SCT.AnatomicalStructure, Code("PLQ-WALL", "99PLAQUE", "Coronary artery wall")),
    LUMEN: ("lumen", codes.SCT.AnatomicalStructure, codes.SCT.LumenOfArtery),
    CALCIFIED: ("calcified plaque", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.CalcifiedAtheromatousPlaque),
    NONCALCIFIED: ("non-calcified plaque", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Atheroma),
}


# Type-2 patient and study attributes a Segmentation copies from its source: present, possibly empty.
STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def cielab(rgb: np.ndarray) -> hd.color.CIELabColor:
    """The CIELab colour (D65) of an sRGB colour with components in [0, 1]."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = (116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]))
    return hd.color.CIELabColor(
        float(np.clip(lab[0], 0, 100)), float(np.clip(lab[1], -128, 127)), float(np.clip(lab[2], -128, 127))
    )


def write_segmentation(
    path: Path, labels: np.ndarray, headers: list[Dataset], geometry: Geometry, *, algorithm: str, version: str
) -> Path:
    """Write ``labels`` ``(Z, Y, X)`` uint8 (classes 0..4, slices in the order of ``headers``) as a DICOM
    Segmentation of the series ``headers`` (its slices' datasets, pixel data not needed) on ``geometry`` to
    ``path``, through a temporary file and a rename.

    Args:
        algorithm: the method that made it (recorded as the segments' algorithm).
        version: the software version recorded.
    """
    headers = [_complete(h, float(geometry.spacing[0])) for h in headers]
    family = codes.cid7162.ArtificialIntelligence
    algorithm_id = hd.AlgorithmIdentificationSequence(name=f"plaque {algorithm}", family=family, version=version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
            anatomic_regions=[codes.SCT.CoronaryArtery],
            display_color=cielab(CLASS_COLOURS[number].astype(np.float64)),
        )
        for number, (label, category, kind) in SEGMENTS.items()
    ]
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=np.asarray(labels, dtype=np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        omit_empty_frames=bool(np.any(labels)),  # an empty volume keeps its frames (highdicom needs one)
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="plaque",
        manufacturer_model_name=f"plaque {algorithm}",
        software_versions=version,
        device_serial_number="none",
        series_description=f"plaque {algorithm} segmentation (research use only)",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=[float(geometry.spacing[1]), float(geometry.spacing[2])],
            slice_thickness=float(headers[0].SliceThickness),
            spacing_between_slices=float(geometry.spacing[0]),
        ),
    )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    seg.save_as(tmp)
    tmp.replace(path)
    return path


def _complete(header: Dataset, step_mm: float) -> Dataset:
    """``header``, or a copy of it with the missing `STUDY_ATTRIBUTES` added empty (as DICOM allows them to be)
    and a missing or empty SliceThickness set to the spacing between slices ``step_mm``."""
    missing = [a for a in STUDY_ATTRIBUTES if a not in header]
    thickness = header.get("SliceThickness")
    if not missing and thickness not in (None, ""):
        return header
    header = copy.copy(header)
    for attribute in missing:
        setattr(header, attribute, "")
    if thickness in (None, ""):
        header.SliceThickness = step_mm
    return header
