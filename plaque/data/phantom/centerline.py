"""The phantom vessel's course: a smooth 3D curve that runs mostly along z.

The in-plane position of the vessel axis is a function of the axial coordinate ``z`` (LPS mm):
``(x, y)(z) = centre_xy + slope * (z - centre_z) + sum_h amp_h * sin(2 pi (z - centre_z) / wavelength_h + phase_h)``,
so the curve is oblique to the axial axis, gently curved, and crosses every slice exactly once
(it enters through the bottom slab and leaves through the top one).

Arclength ``s`` runs from proximal to distal: ``s = 0`` where the curve crosses the top slice
plane (most superior, ``z_top``) and ``s = S`` (the segment length) at the bottom slice plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DENSE_STEP_MM = 0.05  # z step of the dense centerline sampling used for nearest-point queries
END_PAD_MM = 6.0  # the dense centerline extends this far beyond the volume's top and bottom


@dataclass(frozen=True)
class PathModel:
    """In-plane course of the vessel axis as a function of z.

    Attributes:
        centre: ``(x, y, z)`` LPS mm; ``z`` is the mid-slab plane the terms below are relative to.
        slope: ``(dx/dz, dy/dz)`` of the straight part.
        amp: ``(H, 2)`` wobble amplitudes (mm) in x and y of each harmonic.
        wavelength: ``(H,)`` wobble wavelengths (mm along z).
        phase: ``(H, 2)`` wobble phases (rad) in x and y.
    """

    centre: tuple[float, float, float]
    slope: tuple[float, float]
    amp: tuple[tuple[float, float], ...]
    wavelength: tuple[float, ...]
    phase: tuple[tuple[float, float], ...]

    def deviation(self, t: np.ndarray) -> np.ndarray:
        """``(n, 2)`` in-plane offset (mm) from ``centre`` at ``t = z - centre_z`` ``(n,)`` mm."""
        t = np.asarray(t, dtype=np.float64)
        out = np.outer(t, np.asarray(self.slope))
        for (ax, ay), lam, (px, py) in zip(self.amp, self.wavelength, self.phase):
            w = 2.0 * math.pi / lam
            out[:, 0] += ax * np.sin(w * t + px)
            out[:, 1] += ay * np.sin(w * t + py)
        return out

    def deviation_slope(self, t: np.ndarray) -> np.ndarray:
        """``(n, 2)`` derivative ``d(x, y)/dz`` at ``t = z - centre_z`` ``(n,)`` mm."""
        t = np.asarray(t, dtype=np.float64)
        out = np.tile(np.asarray(self.slope, dtype=np.float64), (t.size, 1))
        for (ax, ay), lam, (px, py) in zip(self.amp, self.wavelength, self.phase):
            w = 2.0 * math.pi / lam
            out[:, 0] += ax * w * np.cos(w * t + px)
            out[:, 1] += ay * w * np.cos(w * t + py)
        return out

    def xy(self, z: np.ndarray) -> np.ndarray:
        """``(n, 2)`` LPS ``(x, y)`` mm of the axis at axial positions ``z`` ``(n,)`` mm."""
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        return self.deviation(z - self.centre[2]) + np.asarray(self.centre[:2])

    def direction(self, z: np.ndarray) -> np.ndarray:
        """``(n, 3)`` unit tangent at ``z``, pointing proximal to distal (towards decreasing z)."""
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        d = np.concatenate([self.deviation_slope(z - self.centre[2]), np.ones((z.size, 1))], axis=1)
        return -d / np.linalg.norm(d, axis=1, keepdims=True)

    def secant(self, z: np.ndarray) -> np.ndarray:
        """``(n,)`` 1 / cos of the angle between the axis and the z axis (arclength per mm of z)."""
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        return np.sqrt(1.0 + (self.deviation_slope(z - self.centre[2]) ** 2).sum(axis=1))


@dataclass
class Centerline:
    """Dense sampling of the vessel axis, proximal to distal.

    Attributes:
        points: ``(P, 3)`` LPS mm.
        tangent: ``(P, 3)`` unit tangents (direction of increasing ``s``).
        s: ``(P,)`` arclength (mm); 0 at the top slice plane, increasing distally.
        z: ``(P,)`` axial coordinate of each point (decreasing).
        normal: ``(P, 3)`` rotation-minimising frame normal; ``binormal = tangent x normal``.
        binormal: ``(P, 3)``.
    """

    points: np.ndarray
    tangent: np.ndarray
    s: np.ndarray
    z: np.ndarray
    normal: np.ndarray | None = None
    binormal: np.ndarray | None = None

    def s_at_z(self, z: np.ndarray) -> np.ndarray:
        """Arclength (mm) at which the axis crosses axial planes ``z`` (any shape)."""
        return np.interp(z, self.z[::-1], self.s[::-1])

    def resample(self, s0: float, s1: float, step_mm: float) -> np.ndarray:
        """``(M, 3)`` points every ``step_mm`` of arclength from ``s0`` to ``s1`` (both ends included)."""
        n = max(2, int(round((s1 - s0) / step_mm)) + 1)
        s = np.linspace(s0, s1, n)
        return np.stack([np.interp(s, self.s, self.points[:, d]) for d in range(3)], axis=1)

    def with_frames(self, reference: np.ndarray) -> Centerline:
        """Attach a rotation-minimising frame whose first normal is ``reference`` ``(3,)`` made perpendicular.

        Each normal is the previous one projected onto the plane perpendicular to the next
        tangent (parallel transport; exact enough at the dense sampling step).
        """
        t = self.tangent
        n = np.empty_like(t)
        ref = np.asarray(reference, dtype=np.float64)
        cur = ref - (ref @ t[0]) * t[0]
        cur = cur / np.linalg.norm(cur)
        cx, cy, cz = (float(v) for v in cur)
        for i, (tx, ty, tz) in enumerate(t.tolist()):
            d = cx * tx + cy * ty + cz * tz
            cx, cy, cz = cx - d * tx, cy - d * ty, cz - d * tz
            norm = math.sqrt(cx * cx + cy * cy + cz * cz)
            cx, cy, cz = cx / norm, cy / norm, cz / norm
            n[i] = (cx, cy, cz)
        self.normal = n
        self.binormal = np.cross(t, n)
        return self


def build_centerline(
    path: PathModel, z_top: float, z_bottom: float, pad_mm: float = END_PAD_MM, step_mm: float = DENSE_STEP_MM
) -> Centerline:
    """Sample ``path`` densely from ``z_top + pad_mm`` down to ``z_bottom - pad_mm``.

    Args:
        path: the vessel course.
        z_top: axial position (mm) of the top slice plane (arclength origin).
        z_bottom: axial position (mm) of the bottom slice plane.
        pad_mm: extension beyond both ends so that voxels near the slabs see a continuing tube.
        step_mm: z step between samples.

    Returns:
        The centerline without frames (see `Centerline.with_frames`).
    """
    n = int(math.ceil((z_top - z_bottom + 2 * pad_mm) / step_mm)) + 1
    z = np.linspace(z_top + pad_mm, z_bottom - pad_mm, n)
    pts = np.concatenate([path.xy(z), z[:, None]], axis=1)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    s -= np.interp(z_top, z[::-1], s[::-1])
    return Centerline(points=pts, tangent=path.direction(z), s=s, z=z)


def segment_length(path: PathModel, z_top: float, z_bottom: float) -> float:
    """Arclength (mm) of the axis between the bottom and top slice planes."""
    cl = build_centerline(path, z_top, z_bottom, pad_mm=0.0, step_mm=0.1)
    return float(cl.s[-1] - cl.s[0])
