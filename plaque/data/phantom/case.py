"""One synthetic CCTA patient: spec -> HU volume, labels, centerline and DICOM tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plaque.classes import CLASS_NAMES, NUM_CLASSES
from plaque.data.phantom.anatomy import PatientSpec, sample_spec
from plaque.data.phantom.centerline import build_centerline
from plaque.data.phantom.render import apply_psf, correlated_noise, render_ellipsoid
from plaque.data.phantom.scene import render_background, render_tube
from plaque.data.phantom.tags import make_tags
from plaque.io.geometry import Geometry

VESSEL_NAME = "LAD"
CENTERLINE_STEP_MM = 0.25


@dataclass
class PhantomCase:
    """A rendered phantom patient.

    Attributes:
        index: patient index in the cohort.
        hu: ``(Z, Y, X)`` float32 Hounsfield units (blurred, with noise).
        labels: ``(Z, Y, X)`` uint8 classes 0..4 at voxel centres (no blur).
        geometry: the shared grid.
        centerlines: vessel name -> ``(P, 3)`` LPS mm axis points, proximal to distal, inside the volume.
        tags: DICOM tags by keyword (identifying ones are fictitious).
        truth: the sampled parameters and class voxel counts (JSON-ready, no identifying tags).
        spec: the sampled patient.
    """

    index: int
    hu: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    centerlines: dict[str, np.ndarray]
    tags: dict[str, str]
    truth: dict[str, Any]
    spec: PatientSpec = field(repr=False)

    @property
    def name(self) -> str:
        """Folder name in the raw layout (not the PatientID)."""
        return case_name(self.index)


def case_name(index: int) -> str:
    """``case_000``, ``case_001``, ..."""
    return f"case_{index:03d}"


def generate_case(index: int, seed: int, cfg: dict[str, Any], *, noise: bool = True) -> PhantomCase:
    """Render patient ``index`` of the cohort drawn with ``seed``.

    Args:
        index: patient index (0-based).
        seed: cohort seed; ``np.random.default_rng([seed, index])`` drives everything.
        cfg: the resolved ``phantom`` config section (``matrix``, ``supersample``, ``scanner``).
        noise: add the correlated image noise (off only to inspect the noise-free image).

    Returns:
        The case; identical for identical ``(index, seed, cfg)``.
    """
    spec = sample_spec(index, seed, cfg)
    tag_rng, texture_rng, noise_rng = np.random.default_rng([seed, index]).spawn(3)
    sc, su, geom = spec.scanner, spec.surroundings, spec.geometry
    factor = int(cfg["supersample"])

    heart = np.array([su.heart_dir[0], su.heart_dir[1], 0.0])
    cl = build_centerline(spec.path, spec.z_top, spec.z_bottom).with_frames(reference=heart)
    background = render_background(spec, cl, geom, texture_rng)
    obj = background.copy()
    labels = np.zeros(geom.shape, dtype=np.uint8)
    flat, delta, lab = render_tube(spec, cl, geom, background, factor)
    obj.ravel()[flat] += delta
    labels.ravel()[flat] = lab
    if su.spot_centre is not None:
        flat, delta, _ = render_ellipsoid(
            geom,
            background,
            np.array(su.spot_centre),
            np.array(su.spot_radii_mm),
            np.array(su.spot_axes),
            su.spot_hu,
            factor,
        )
        obj.ravel()[flat] += delta
    del background
    hu = apply_psf(obj, geom, sc.psf_fwhm_xy_mm, sc.psf_fwhm_z_mm, sc.thickness_mm)
    del obj
    if noise:
        hu += correlated_noise(noise_rng, geom.shape, geom.spacing, sc.noise_sd_hu, sc.noise_corr_mm)

    counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
    truth = spec.summary()
    truth["class_voxels"] = {CLASS_NAMES[c]: int(counts[c]) for c in range(NUM_CLASSES)}
    return PhantomCase(
        index=int(index),
        hu=hu,
        labels=labels,
        geometry=geom,
        centerlines={VESSEL_NAME: cl.resample(0.0, spec.segment_mm, CENTERLINE_STEP_MM)},
        tags=make_tags(tag_rng, spec),
        truth=truth,
        spec=spec,
    )
