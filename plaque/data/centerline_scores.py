"""How well a centerline matches a reference: the CAT08 challenge's average distance and overlap.

Used to check centerlines derived from labels or from the vessel model's mask against known ones (the
phantom's true centerlines): `plaque.train.vessel` on its validation patients, ``benchmarks/centerlines.py``;
`stray_length` measures derived lines that follow no known one.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from plaque.data.slicing import arclength

OVERLAP_MM = 1.0  # a reference point is covered when the other line passes within this distance (CAT08)
DENSE_MM = 0.05  # polylines are sampled this densely for point-to-line distances
STRAY_MM = 2.0  # a derived point follows a true line when within this distance of it
STRAY_SHARE = 0.5  # a derived line is stray when fewer than this share of its points follow a true line


def densify(points_mm: np.ndarray) -> np.ndarray:
    """``(P', 3)``: a polyline ``(P, 3)`` with points at most `DENSE_MM` apart (its vertices kept)."""
    parts = [points_mm[:1]]
    for a, b in zip(points_mm[:-1], points_mm[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / DENSE_MM)))
        parts.append(a + np.linspace(0.0, 1.0, n + 1)[1:, None] * (b - a))
    return np.concatenate(parts)


def compare(true_mm: np.ndarray, derived_mm: np.ndarray) -> dict[str, float | bool]:
    """A true ``(P, 3)`` against a derived ``(Q, 3)`` centerline (LPS mm, proximal first).

    Returns:
        ``mean_mm``: the mean over the true points of their distance to the derived line and over the derived
        points of their distance to the true line; ``max_mm``: the largest of those; ``overlap``: the share of
        true points within `OVERLAP_MM` of the derived line; ``ostium``: whether the derived line starts at the
        true proximal end (nearer to it than to the distal end).
    """
    to_derived = cKDTree(densify(derived_mm)).query(true_mm)[0]
    to_true = cKDTree(densify(true_mm)).query(derived_mm)[0]
    start = derived_mm[0]
    return {
        "mean_mm": float(np.concatenate([to_derived, to_true]).mean()),
        "max_mm": float(max(to_derived.max(), to_true.max())),
        "overlap": float(np.mean(to_derived <= OVERLAP_MM)),
        "ostium": bool(np.linalg.norm(start - true_mm[0]) < np.linalg.norm(start - true_mm[-1])),
    }


def best_match(true_mm: np.ndarray, derived: dict[str, np.ndarray]) -> tuple[str, dict[str, float | bool]]:
    """The derived branch of ``derived`` (name -> ``(Q, 3)``) that overlaps ``true_mm`` most (ties: nearer),
    and its `compare` figures; ``("", zero overlap)`` when nothing was derived."""
    if not derived:
        return "", {"mean_mm": float("nan"), "max_mm": float("nan"), "overlap": 0.0, "ostium": False}
    scores = {name: compare(true_mm, line) for name, line in derived.items()}
    best = max(scores, key=lambda name: (scores[name]["overlap"], -scores[name]["mean_mm"]))
    return best, scores[best]


def stray_length(true_lines: list[np.ndarray], derived: dict[str, np.ndarray]) -> float:
    """Total length (mm) of the derived lines (name -> ``(Q, 3)`` LPS mm) that follow none of ``true_lines``
    (each ``(P, 3)``): fewer than `STRAY_SHARE` of their points within `STRAY_MM` of a true line. Plaque is
    segmented along every derived line, so a stray one is where false plaque comes from."""
    if not derived:
        return 0.0
    tree = cKDTree(np.concatenate([densify(line) for line in true_lines]))
    stray = [line for line in derived.values() if np.mean(tree.query(line)[0] <= STRAY_MM) < STRAY_SHARE]
    return float(sum(arclength(line)[-1] for line in stray))
