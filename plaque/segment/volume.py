"""Segment a scan's voxels: cut cross-sections as training did, predict them, map the classes back to voxels.

Cross-sections. Along each vessel's centerline they are cut as `plaque.data.preprocess` cut the training
data, with the cross-section settings the model was trained on (its ``preprocess``: window, crop, stored
size), but one every in-plane pixel spacing of the scan (`segment_step_mm`, never coarser than the training
step), and to the edge of the scan (sections whose centre lies inside it). Each is predicted on its own, so
the finer step costs time only; it is what makes the mapping below faithful: mapping the *ground-truth*
cross-sections of phantom patients back gives a 3D Dice of 0.895 (wall) and 0.943 (lumen) at a 1 mm step,
0.942 and 0.970 at 0.5 mm and 0.980 and 0.989 at 0.25 mm (README, Segmenting new scans). Without a centerline (the fallback) the scan is cut into axial tiles
of the same side that cover every axial slice: a model trained on cross-sections centred on a vessel sees
other views there, so expect false positives away from the vessels and give a centerline for real use.

Back to voxels (`to_voxels`). Every pixel of every cross-section is a point in the scan. A voxel takes the
class of the sampled point nearest to its centre, in millimetres, when that point lies within the reach
of the sampling (half the step between cross-sections and half a pixel diagonal: ``reach_mm``); voxels
out of reach of every cross-section are background. Where the cross-sections of two vessels, or of a
bending vessel, overlap, the nearer point decides. Axial tiles sample the voxel centres themselves, so each
voxel takes its own tile's class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from plaque.data.slicing import axial_tile_coords, native_spacing, resize, sample, section_coords, window
from plaque.inference import Predictor
from plaque.io.geometry import Geometry

FALLBACK = "axial tiles (no centerline)"


@dataclass
class Cut:
    """Where the cross-sections of one vessel (or the axial tiles of a scan) lie: ``coords`` ``(N, 3, S, S)``
    fractional voxel indices, their pixel spacing and step (mm, 0 for tiles), named ``vessel``."""

    vessel: str
    coords: np.ndarray
    spacing_mm: float
    step_mm: float


@dataclass
class Sections:
    """The cross-sections of one `Cut` and what the model made of them.

    Attributes:
        cut: where they lie.
        images: ``(N, S, S)`` float32 in [0, 1], the windowed cross-sections at their own pixels.
        pred: ``(N, S, S)`` uint8 classes at those pixels.
    """

    cut: Cut
    images: np.ndarray
    pred: np.ndarray


def cuts(geometry: Geometry, centerlines: dict[str, np.ndarray], crop_px: int, trained_step_mm: float) -> list[Cut]:
    """The cross-sections segmentation cuts (the module docstring): per vessel of ``centerlines`` (vessel ->
    ``(P, 3)`` LPS mm), or axial tiles without any; side ``crop_px`` native pixels."""
    if not centerlines:
        return [Cut(FALLBACK, axial_tile_coords(geometry.shape, crop_px), native_spacing(geometry), 0.0)]
    step = segment_step_mm(geometry, trained_step_mm)
    out = []
    for name, points in centerlines.items():
        coords, spacing, _ = section_coords(geometry, points, crop_px, step, partial=True)
        out.append(Cut(name, coords, spacing, step))
    return out


def cut_and_predict(
    predictor: Predictor, hu: np.ndarray, geometry: Geometry, centerlines: dict[str, np.ndarray]
) -> list[Sections]:
    """`cuts` of a scan, windowed, resized and predicted as in training, with the predictions at the cuts' pixels.

    Args:
        predictor: a trained method (`plaque.inference.load_predictor`); its ``preprocess`` settings are used.
        hu: ``(Z, Y, X)`` Hounsfield units; geometry: their grid; centerlines: vessel -> ``(P, 3)`` LPS mm.
    """
    settings = predictor.preprocess
    crop, size = int(settings["crop_px"]), int(settings["size"])
    hu32 = np.asarray(hu, dtype=np.float32)
    out = []
    for cut in cuts(geometry, centerlines, crop, float(settings["step_mm"])):
        windowed = window(sample(hu32, cut.coords, order=1), settings["window_hu"])
        images, _ = resize(windowed, np.zeros(windowed.shape, dtype=np.uint8), size)
        spacing = cut.spacing_mm * crop / size
        pred = predictor.predict(images, spacing) if len(images) else np.zeros(images.shape, np.uint8)
        _, pred = resize(np.zeros(pred.shape, dtype=np.float32), pred, crop)
        out.append(Sections(cut, windowed, pred))
    return out


def segment_step_mm(geometry: Geometry, trained_step_mm: float) -> float:
    """The arclength between the cross-sections segmentation cuts: the scan's in-plane pixel spacing, or the
    step the model was trained on where that is finer."""
    return min(trained_step_mm, native_spacing(geometry))


def reach_mm(step_mm: float, spacing_mm: float) -> float:
    """How far from its nearest sampled point a voxel may lie and still take its class: half the step between
    cross-sections and half a pixel diagonal, combined."""
    return float(np.hypot(step_mm / 2.0, spacing_mm / np.sqrt(2.0))) * 1.001


def to_voxels(geometry: Geometry, sections: list[Sections]) -> tuple[np.ndarray, np.ndarray]:
    """The label volume ``(Z, Y, X)`` uint8 of ``sections`` (the rule of the module docstring) and the owner
    volume ``(Z, Y, X)`` int16: the entry of ``sections`` that decided each voxel, -1 where none reaches."""
    volume = np.zeros(geometry.shape, dtype=np.uint8)
    owner = np.full(geometry.shape, -1, dtype=np.int16)
    best = np.full(geometry.shape, np.inf)
    mm = np.asarray(geometry.spacing, dtype=np.float64)  # (dz, dy, dx): index axes are orthogonal
    for n, s in enumerate(sections):
        points = np.moveaxis(s.cut.coords, 1, -1).reshape(-1, 3)
        classes = s.pred.reshape(-1)
        if s.cut.vessel == FALLBACK:  # the points are the voxel centres
            voxels, dist, cls = np.rint(points).astype(np.int64), np.zeros(len(points)), classes
            inside = np.all((voxels >= 0) & (voxels < np.array(geometry.shape)), axis=1)
            voxels, dist, cls = voxels[inside], dist[inside], cls[inside]
        else:
            voxels, dist, cls = _nearest_within(
                points, classes, geometry, mm, reach_mm(s.cut.step_mm, s.cut.spacing_mm)
            )
        flat = np.ravel_multi_index(voxels.T, geometry.shape)
        closer = dist < best.reshape(-1)[flat]
        best.reshape(-1)[flat[closer]] = dist[closer]
        volume.reshape(-1)[flat[closer]] = cls[closer]
        owner.reshape(-1)[flat[closer]] = n
    return volume, owner


def _nearest_within(
    points: np.ndarray, classes: np.ndarray, geometry: Geometry, mm: np.ndarray, reach: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels ``(K, 3)`` within ``reach`` mm of a sampled point, their distance to the nearest one and its class."""
    shape = np.array(geometry.shape)
    near = np.clip(np.rint(points).astype(np.int64), 0, shape - 1)
    mask = np.zeros(geometry.shape, dtype=bool)
    mask[tuple(near.T)] = True
    steps = np.ceil(reach / mm).astype(int)  # voxels within reach along each axis
    structure = np.ones(tuple(2 * steps + 1), dtype=bool)
    candidates = np.argwhere(ndimage.binary_dilation(mask, structure=structure))
    dist, idx = cKDTree(points * mm).query(candidates * mm, distance_upper_bound=reach)
    ok = np.isfinite(dist)
    return candidates[ok], dist[ok], classes[idx[ok]]
