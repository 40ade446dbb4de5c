"""Eccentric coronary plaques: geometry parameters, burden and remodelling.

Plaque geometry. In tube coordinates (arclength ``s``, radius ``r``, angle ``theta`` in the
rotation-minimising frame) a plaque displaces the lumen boundary inward by ``d_in * a(s) * g(theta)``
(stenosis) and the outer vessel boundary outward by ``d_out * a(s) * g(theta)`` (positive
remodelling); the thin wall layer stays outside the plaque. ``a`` is a cos^2 bump of the plaque
length, ``g`` a cos^2 bump of angular half-width ``alpha`` (a crescent over part of the
circumference). ``d_out`` follows from the remodelling index (outer-wall area at the plaque peak over
the reference outer-wall area) and ``d_in`` from the plaque burden, defined here as plaque area over
the area inside the wall layer (plaque + lumen) at the peak, in closed form with
``integral(g) = alpha`` and ``integral(g^2) = 3 alpha / 4``. Burdens that the crescent cannot reach
with the lumen kept open (``d_in <= 0.85 r_lumen``) first widen the crescent, then are capped; the
achieved burden and remodelling index are recorded. Mixed plaques hold a calcified core: the part of
the crescent within ``depth * a_c(s) * g_c(theta)`` of its outer boundary (fraction of the local plaque
thickness), with narrower bumps ``a_c``, ``g_c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LIPID_HU, FIBROUS_HU, CALCIUM_HU = (-20.0, 30.0), (50.0, 130.0), (400.0, 1500.0)
FIBROUS_LUMEN_SLOPE = 0.1  # fibrous plaque HU += 0.1 * (lumen HU - 400)
LIPID_P = 0.35  # share of non-calcified components that are lipid-rich
BURDEN, REMODELLING = (0.2, 0.8), (1.0, 1.4)
MAX_STENOSIS = 0.85  # d_in <= this fraction of the reference lumen radius
PLAQUE_GAP_MM, END_GAP_MM = 1.0, 2.0


@dataclass(frozen=True)
class Plaque:
    """One eccentric plaque (see the module docstring). Angles in radians, lengths in mm."""

    kind: str  # "calcified" | "non_calcified" | "mixed"
    s_mm: float  # arclength of the peak
    length_mm: float  # support of the axial cos^2 bump
    angle: float  # angular centre at the peak
    half_width: float  # alpha
    twist: float  # rad per mm of arclength: the angular centre drifts along the plaque
    d_in_mm: float
    d_out_mm: float
    burden: float  # achieved
    burden_target: float
    remodelling: float  # achieved
    remodelling_target: float
    calcium_hu: float = 0.0  # calcified part, before blur
    ncp_hu: float = 0.0  # non-calcified part
    ncp_type: str = ""  # "lipid" | "fibrous" | ""
    core_s_mm: float = 0.0  # calcified core of a mixed plaque
    core_length_mm: float = 0.0
    core_angle: float = 0.0
    core_half_width: float = 0.0
    core_depth: float = 0.0


def uniform(rng: np.random.Generator, lo_hi: tuple[float, float] | list[float]) -> float:
    """One uniform draw in ``[lo, hi]``."""
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _bump_areas(alpha: float) -> tuple[float, float]:
    """``(integral g, integral g^2 / 2)`` of the angular cos^2 bump of half-width ``alpha``."""
    return alpha, 3.0 * alpha / 8.0


def solve_amplitudes(r_lumen: float, wall: float, alpha: float, burden: float, ri: float) -> tuple[float, float]:
    """Inward and outward peak displacements ``(d_in, d_out)`` (mm) for a target burden and remodelling.

    Burden is plaque area over (plaque + lumen) area at the peak; remodelling index is outer-wall area
    over the reference outer-wall area. ``d_in`` may exceed ``MAX_STENOSIS * r_lumen`` (infeasible:
    the caller widens or caps).
    """
    ig, half_ig2 = _bump_areas(alpha)
    r_out = r_lumen + wall
    # outer area: pi r_out^2 + r_out ig d + half_ig2 d^2 = ri pi r_out^2
    d_out = _positive_root(half_ig2, r_out * ig, -(ri - 1.0) * math.pi * r_out**2)
    inner = math.pi * r_lumen**2 + r_lumen * ig * d_out + half_ig2 * d_out**2
    # lumen area: pi r_l^2 - r_l ig d + half_ig2 d^2 = (1 - burden) * inner
    c = math.pi * r_lumen**2 - (1.0 - burden) * inner
    if c <= 0.0:  # outward growth alone exceeds the burden: shrink it, keep the lumen
        plaque_area = burden * math.pi * r_lumen**2 / (1.0 - burden)
        return 0.0, _positive_root(half_ig2, r_lumen * ig, -plaque_area)
    disc = (r_lumen * ig) ** 2 - 4.0 * half_ig2 * c
    if disc < 0.0:
        return math.inf, d_out
    return (r_lumen * ig - math.sqrt(disc)) / (2.0 * half_ig2), d_out


def _positive_root(a: float, b: float, c: float) -> float:
    """The non-negative root of ``a x^2 + b x + c`` (a > 0, c <= 0)."""
    return max(0.0, (-b + math.sqrt(b * b - 4.0 * a * c)) / (2.0 * a))


def achieved(r_lumen: float, wall: float, alpha: float, d_in: float, d_out: float) -> tuple[float, float]:
    """``(burden, remodelling index)`` of a crescent with the given displacements."""
    ig, half_ig2 = _bump_areas(alpha)
    r_out = r_lumen + wall
    inner = math.pi * r_lumen**2 + r_lumen * ig * d_out + half_ig2 * d_out**2
    lumen = math.pi * r_lumen**2 - r_lumen * ig * d_in + half_ig2 * d_in**2
    outer = math.pi * r_out**2 + r_out * ig * d_out + half_ig2 * d_out**2
    return 1.0 - lumen / inner, outer / (math.pi * r_out**2)


def sample_plaque(
    rng: np.random.Generator, kind: str, s_mm: float, length: float, r_lumen: float, wall: float, lumen_hu: float
) -> Plaque:
    """Draw one plaque of ``kind`` peaking at arclength ``s_mm``.

    Args:
        rng: the patient's random stream.
        kind: "calcified", "non_calcified" or "mixed".
        s_mm: arclength of the peak (mm); ``length``: axial support (mm).
        r_lumen: reference lumen radius at the peak (mm); ``wall``: wall thickness (mm).
        lumen_hu: the patient's lumen attenuation (fibrous plaque HU follows it).

    Returns:
        The plaque, with achieved burden and remodelling index next to the drawn targets.
    """
    burden_t, ri_t = uniform(rng, BURDEN), uniform(rng, REMODELLING)
    alpha = math.radians(uniform(rng, (35.0, 120.0) if kind == "calcified" else (50.0, 160.0)))
    cap = MAX_STENOSIS * r_lumen
    for a in (alpha, min(math.pi, 1.4 * alpha), min(math.pi, 2.0 * alpha), math.pi):
        d_in, d_out = solve_amplitudes(r_lumen, wall, a, burden_t, ri_t)
        alpha = a
        if d_in <= cap:
            break
    d_in = min(d_in, cap)
    burden, ri = achieved(r_lumen, wall, alpha, d_in, d_out)
    fields: dict[str, Any] = dict(
        kind=kind,
        s_mm=s_mm,
        length_mm=length,
        angle=uniform(rng, (0.0, 2 * math.pi)),
        half_width=alpha,
        twist=math.radians(uniform(rng, (-3.0, 3.0))),
        d_in_mm=d_in,
        d_out_mm=d_out,
        burden=burden,
        burden_target=burden_t,
        remodelling=ri,
        remodelling_target=ri_t,
    )
    if kind in ("calcified", "mixed"):
        fields["calcium_hu"] = uniform(rng, CALCIUM_HU)
    if kind in ("non_calcified", "mixed"):
        lipid = bool(rng.random() < LIPID_P)
        fields["ncp_type"] = "lipid" if lipid else "fibrous"
        if lipid:
            fields["ncp_hu"] = uniform(rng, LIPID_HU)
        else:
            fields["ncp_hu"] = uniform(rng, FIBROUS_HU) + FIBROUS_LUMEN_SLOPE * (lumen_hu - 400.0)
    if kind == "mixed":
        core_len = min(length, max(2.0, length * uniform(rng, (0.3, 0.7))))
        core_hw = max(math.radians(25.0), alpha * uniform(rng, (0.3, 0.7)))
        fields.update(
            core_length_mm=core_len,
            core_s_mm=s_mm + 0.8 * uniform(rng, (-0.5, 0.5)) * (length - core_len),
            core_half_width=core_hw,
            core_angle=0.8 * uniform(rng, (-1.0, 1.0)) * max(0.0, alpha - core_hw),
            core_depth=uniform(rng, (0.5, 0.95)),
        )
    return Plaque(**fields)


def place_plaques(
    rng: np.random.Generator, lengths: list[float], lo: float, hi: float
) -> list[tuple[int, float, float]]:
    """Non-overlapping ``(i, centre, length)`` within arclengths ``[lo, hi]`` for ``lengths[i]`` (mm).

    Lengths are cut to the range; plaques that find no free stretch in 50 tries are dropped (the first
    always fits).
    """
    placed: list[tuple[int, float, float]] = []
    for i, length in enumerate(lengths):
        length = min(length, hi - lo)
        for _ in range(50):
            c = uniform(rng, (lo + length / 2, hi - length / 2))
            if all(abs(c - c2) >= (length + l2) / 2 + PLAQUE_GAP_MM for _, c2, l2 in placed):
                placed.append((i, c, length))
                break
    return placed
