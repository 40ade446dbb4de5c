"""Vessel centerlines derived from a label volume, for patients that come without a centerline file.

The vessel is every labelled voxel (wall, lumen and plaque: classes 1..4). Its mask is resampled to an
isotropic grid (the scan's finest spacing, so that anisotropic voxels do not bias the medial axis),
skeletonised (`skimage.morphology.skeletonize`) and turned into a graph of branches (`skan.Skeleton`).
scikit-image's 3D thinning can delete a whole stretch of vessel whose cross-section is an even number of
voxels across, symmetric about a voxel corner (a straight bar 1 x 2 voxels wide vanishes entirely; scikit-image
issue 3757). So the skeleton must cover the mask, every vessel voxel within `COVER_RADII` of the largest vessel
radius of the skeleton (plus a voxel); if it does not, the isotropic grid is resampled at the next of
`GRID_PHASES` (a sub-voxel shift, which changes the digital cross-sections) and thinned again, and the best
covering skeleton is kept.
Spurs, short branches that end in a tip, are pruned when shorter than `SPUR_RADII` vessel radii at their
junction. Each connected tree is then split into branches from its ostium outward: the ostium is the tip
where the vessel is widest (coronary arteries taper from the aorta towards their distal ends); the main
branch runs from it to the farthest tip along the skeleton (to the farthest junction where the ostium is the
only tip: the far end closes in a loop), each side branch from its junction on a branch already taken to its
farthest tip, longest first. Branches shorter than `MIN_BRANCH_MM` are dropped.
Each branch is smoothed along its arclength, extended straight to the edge of the scan where the vessel
leaves the scan there (a skeleton stops about a radius short of a cut face), and resampled.

Names: ``V1``, ``V2``, ... for the main branches of the trees, longest first; ``V1.1``, ``V1.2``, ... for
the side branches of ``V1`` in the order they were taken, ``V1.1.1`` for a side branch of ``V1.1``, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skan import Skeleton, summarize
from skimage.morphology import skeletonize

from plaque.classes import FOREGROUND
from plaque.data.slicing import arclength, resample_centerline
from plaque.errors import InputError
from plaque.io.geometry import Geometry

MIN_BRANCH_MM = 10.0  # branches (and trees) shorter than this along the skeleton are dropped
SPUR_RADII = 2.0  # a branch ending in a tip is a spur when shorter than this many vessel radii at its junction
OSTIUM_PROBE_MM = 5.0  # the vessel radius at a tip is the median over this much skeleton from it
SMOOTH_MM = 1.5  # Gaussian sigma (mm of arclength) of the smoothing along each branch
DENSE_MM = 0.1  # arclength step at which branches are smoothed
TANGENT_MM = 3.0  # the end tangent of a branch is the chord over this much arclength
CROP_MARGIN = 2  # voxels kept around the vessel's bounding box
GRID_PHASES = (0.0, 0.5, 1.0 / 3.0, 2.0 / 3.0)  # shifts of the isotropic grid (its voxels) tried in turn
COVER_RADII = 2.0  # a skeleton covers the mask when no vessel voxel is farther from it than this many radii

_TIP_TO_JUNCTION = 1  # skan branch type: one end a tip, the other a junction


@dataclass
class _Graph:
    """The pruned skeleton as a graph of branches.

    Attributes:
        skeleton: the skan skeleton (isotropic voxel indices, ``spacing`` = the grid step in mm).
        branches: `skan.summarize` table, one row per branch.
        radius_mm: ``(Z', Y', X')`` distance of every isotropic voxel to the background (mm).
    """

    skeleton: Skeleton
    branches: pd.DataFrame
    radius_mm: np.ndarray

    def path(self, branch: int, start_node: int) -> np.ndarray:
        """``(P, 3)`` isotropic voxel indices of ``branch``, from its end ``start_node``."""
        coords = self.skeleton.path_coordinates(branch).astype(np.float64)
        return coords if self.branches["node_id_src"].iat[branch] == start_node else coords[::-1]

    def radius_at(self, coords: np.ndarray) -> np.ndarray:
        """``(P,)`` vessel radius (mm) at isotropic voxel indices ``(P, 3)``."""
        return self.radius_mm[tuple(np.round(coords).astype(np.int64).T)]


def vessel_mask(labels: np.ndarray) -> np.ndarray:
    """``(Z, Y, X)`` bool: voxels of the vessel (wall, lumen or plaque) in a label volume of classes 0..4."""
    return np.isin(labels, FOREGROUND)


def derive_centerlines(
    labels: np.ndarray, geometry: Geometry, step_mm: float, where: str | Path
) -> dict[str, np.ndarray]:
    """Each vessel branch's centerline, derived from a label volume (see the module docstring).

    Args:
        labels: ``(Z, Y, X)`` uint8 classes 0..4 on ``geometry``.
        geometry: the grid of ``labels`` (any voxel spacing).
        step_mm: arclength between the returned points (``preprocess.step_mm``).
        where: the label file, named in errors.

    Returns:
        Branch name -> ``(M, 3)`` LPS mm points every ``step_mm``, from the ostium (main branches) or the
        junction on the parent branch (side branches) to the distal end.

    Raises:
        InputError: the label volume holds no vessel, or its skeleton no branch of `MIN_BRANCH_MM`.
    """
    mask = vessel_mask(labels)
    if not mask.any():
        raise InputError(where, "the label volume holds no vessel voxel (classes 1-4): cannot derive a centerline")
    offset, iso_mm, depth, skeleton = _covering_skeleton(mask, geometry.spacing)
    graph = _pruned_graph(skeleton, depth * iso_mm, iso_mm)
    to_volume = iso_mm / np.asarray(geometry.spacing)  # isotropic index step -> volume index step, per axis
    lines: dict[str, np.ndarray] = {}
    for n, tree in enumerate(_trees(graph), start=1):
        for suffix, coords in tree:
            mm = geometry.index_to_world(coords * to_volume + offset)
            line = _extend_to_edge(_smooth(mm), mask, geometry)
            lines[f"V{n}{suffix}"] = resample_centerline(line, step_mm)
    if not lines:
        raise InputError(where, f"the vessel's skeleton has no branch longer than {MIN_BRANCH_MM:g} mm")
    return lines


def _covering_skeleton(
    mask: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The vessel on the isotropic grid, as its depth and its skeleton, at the first of `GRID_PHASES` whose
    skeleton covers the mask (else the first that leaves the smallest gap).

    Returns:
        ``(offset, iso_mm, depth, skeleton)``: ``offset`` and ``iso_mm`` as `_isotropic_crop`; the ``(Z', Y', X')``
        distance of every isotropic voxel to the background (voxels, 0 outside the vessel) and the bool skeleton.
    """
    tried = []
    for phase in GRID_PHASES:
        offset, iso_mm, iso = _isotropic_crop(mask, spacing, phase)
        depth = ndimage.distance_transform_edt(iso)
        skeleton = skeletonize(iso)
        gap = _uncovered(iso, depth, skeleton)
        if gap <= 0.0:
            return offset, iso_mm, depth, skeleton
        tried.append((gap, (offset, iso_mm, depth, skeleton)))
    return min(tried, key=lambda t: t[0])[1]


def _uncovered(iso: np.ndarray, depth: np.ndarray, skeleton: np.ndarray) -> float:
    """How far (voxels) the vessel voxel farthest from the skeleton lies beyond `COVER_RADII` of the largest
    radius on the skeleton (``depth``: distance to the background) plus one voxel (<= 0: the skeleton covers
    the mask; inf: no skeleton)."""
    if not skeleton.any():
        return np.inf
    farthest = float(ndimage.distance_transform_edt(~skeleton)[iso].max())
    return farthest - (COVER_RADII * float(depth[skeleton].max()) + 1.0)


def _isotropic_crop(
    mask: np.ndarray, spacing: tuple[float, float, float], phase: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """The vessel's bounding box (plus `CROP_MARGIN`), resampled to isotropic voxels of the finest spacing, the
    grid shifted by ``phase`` of its voxel along every axis.

    Returns:
        ``(offset, iso_mm, iso)``: ``(3,)`` volume index of isotropic voxel ``[0, 0, 0]``, the isotropic step
        (mm) and the ``(Z', Y', X')`` bool mask (trilinear interpolation, thresholded at one half).
    """
    nonzero = np.argwhere(mask)
    lo = np.maximum(nonzero.min(axis=0) - CROP_MARGIN, 0)
    hi = np.minimum(nonzero.max(axis=0) + CROP_MARGIN + 1, mask.shape)
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32)
    iso_mm = float(min(spacing))
    step = iso_mm / np.asarray(spacing, dtype=np.float64)  # volume voxels per isotropic voxel, per axis
    shift = phase * step  # volume voxels
    shape = tuple(int(np.floor((n - 1 - d) / s)) + 1 for n, s, d in zip(crop.shape, step, shift))
    iso = ndimage.affine_transform(crop, step, offset=shift, output_shape=shape, order=1, mode="nearest") >= 0.5
    return lo + shift, iso_mm, iso


def _pruned_graph(skeleton: np.ndarray, radius_mm: np.ndarray, iso_mm: float) -> _Graph:
    """The graph of ``skeleton`` (vessel radius ``radius_mm`` per isotropic voxel), its spurs pruned until none
    is left."""
    graph = _graph(Skeleton(skeleton, spacing=iso_mm), radius_mm)
    while True:
        spurs = _spurs(graph)
        if not spurs.size:
            return graph
        graph = _graph(graph.skeleton.prune_paths(spurs), radius_mm)


def _graph(skeleton: Skeleton, radius_mm: np.ndarray) -> _Graph:
    return _Graph(skeleton, summarize(skeleton, separator="_"), radius_mm)


def _spurs(graph: _Graph) -> np.ndarray:
    """``(S,)`` indices of the branches that end in a tip and are shorter than `SPUR_RADII` radii at their junction.

    Where every branch but one at a junction is such a short tip (the end of a vessel that forks into short tips),
    the tip that continues the remaining branch most nearly straight stays: it is the vessel's end, not a spur.
    """
    b = graph.branches
    degrees = graph.skeleton.degrees
    src_is_junction = degrees[b["node_id_src"].to_numpy()] > 1
    junction = np.where(src_is_junction, b["node_id_src"], b["node_id_dst"])
    radius = graph.radius_at(graph.skeleton.coordinates[junction])
    lengths = b["branch_distance"].to_numpy()
    spur = (b["branch_type"].to_numpy() == _TIP_TO_JUNCTION) & (lengths < SPUR_RADII * radius)
    ends = b[["node_id_src", "node_id_dst"]].to_numpy()
    for node in np.unique(junction[spur]):
        at_node = np.flatnonzero(spur & (junction == node))
        others = np.flatnonzero((ends == node).any(axis=1) & ~spur)
        if degrees[node] - len(at_node) <= 1:
            incoming = -_direction(graph, others[0], node) if others.size else np.zeros(3)
            straight = [incoming @ _direction(graph, i, node) for i in at_node]
            spur[at_node[int(np.argmax(np.add(straight, 1e-9 * lengths[at_node])))]] = False
    return np.flatnonzero(spur)


def _direction(graph: _Graph, branch: int, node: int) -> np.ndarray:
    """``(3,)`` unit direction in which ``branch`` leaves ``node``, over its first `TANGENT_MM`."""
    coords = graph.path(branch, node)
    chord = coords[min(len(coords) - 1, int(TANGENT_MM / graph.skeleton.spacing[0]))] - coords[0]
    return chord / max(float(np.linalg.norm(chord)), 1e-9)


def _trees(graph: _Graph) -> list[list[tuple[str, np.ndarray]]]:
    """Every connected tree's branches as ``[(name suffix, (P, 3) isotropic indices), ...]``, main branch first;
    trees longest (main branch) first, those shorter than `MIN_BRANCH_MM` left out."""
    b = graph.branches
    nodes, edges = np.unique(b[["node_id_src", "node_id_dst"]].to_numpy(), return_inverse=True)
    edges = edges.reshape(-1, 2)
    weights = coo_matrix((b["branch_distance"].to_numpy(), (edges[:, 0], edges[:, 1])), shape=(len(nodes),) * 2)
    trees = []
    for tree_id in np.unique(b["skeleton_id"]):
        in_tree = np.flatnonzero(b["skeleton_id"].to_numpy() == tree_id)
        tree_nodes = np.unique(edges[in_tree])
        tips = [n for n in tree_nodes if graph.skeleton.degrees[nodes[n]] == 1]
        if not tips:
            continue  # a closed loop has no ostium
        ostium = max(tips, key=lambda n: _tip_radius(graph, edges, nodes, n))
        dist, pred = dijkstra(weights.tocsr(), directed=False, indices=ostium, return_predecessors=True)
        chains = _split(ostium, tips, tree_nodes, dist, pred)
        if chains:
            trees.append([(suffix, _chain_coords(graph, edges, nodes, chain)) for suffix, chain in chains])
    return sorted(trees, key=lambda t: -arclength(t[0][1])[-1])


def _tip_radius(graph: _Graph, edges: np.ndarray, nodes: np.ndarray, tip: int) -> float:
    """Median vessel radius (mm) over the first `OSTIUM_PROBE_MM` of skeleton from a tip (graph node index)."""
    branch = int(np.flatnonzero((edges == tip).any(axis=1))[0])
    coords = graph.path(branch, nodes[tip])
    arc = arclength(coords) * graph.skeleton.spacing[0]
    return float(np.median(graph.radius_at(coords[arc <= OSTIUM_PROBE_MM])))


def _split(
    ostium: int, tips: list[int], tree_nodes: np.ndarray, dist: np.ndarray, pred: np.ndarray
) -> list[tuple[str, list[int]]]:
    """Split a shortest-path tree from ``ostium`` into branches: ``[(name suffix, node chain), ...]``.

    The farthest tip gives the main branch (suffix ``""``); every other tip, farthest first, the chain from
    the first node of a branch already taken to it, kept when at least `MIN_BRANCH_MM` long. Where the
    ostium is the tree's only tip (its far end closes in a loop, as where a mask holds a ring), the farthest
    of ``tree_nodes`` (graph node indices) ends the main branch.
    """
    order = sorted((t for t in tips if t != ostium and np.isfinite(dist[t])), key=lambda t: -dist[t])
    if not order:
        order = [int(max(tree_nodes, key=lambda n: dist[n]))]
    if dist[order[0]] < MIN_BRANCH_MM:
        return []
    owner: dict[int, str] = {}  # node -> suffix of the branch that holds it
    children: dict[str, int] = {}
    chains = []
    for tip in order:
        chain = [tip]
        while chain[-1] != ostium and chain[-1] not in owner:
            chain.append(int(pred[chain[-1]]))
        chain.reverse()
        parent = owner.get(chain[0])
        if parent is not None and dist[tip] - dist[chain[0]] < MIN_BRANCH_MM:
            continue
        suffix = ""
        if parent is not None:
            children[parent] = children.get(parent, 0) + 1
            suffix = f"{parent}.{children[parent]}"
        chains.append((suffix, chain))
        owner.update({n: suffix for n in chain if n not in owner})
    return chains


def _chain_coords(graph: _Graph, edges: np.ndarray, nodes: np.ndarray, chain: list[int]) -> np.ndarray:
    """``(P, 3)`` isotropic indices along a chain of graph nodes, through the shortest branch between each pair."""
    lengths = graph.branches["branch_distance"].to_numpy()
    parts = []
    for a, b in zip(chain[:-1], chain[1:]):
        between = np.flatnonzero(((edges[:, 0] == a) & (edges[:, 1] == b)) | ((edges[:, 0] == b) & (edges[:, 1] == a)))
        branch = int(between[np.argmin(lengths[between])])
        parts.append(graph.path(branch, nodes[a])[1 if parts else 0 :])
    return np.concatenate(parts)


def _smooth(points_mm: np.ndarray) -> np.ndarray:
    """``(P', 3)`` LPS mm: a polyline resampled every `DENSE_MM` and smoothed with a Gaussian of `SMOOTH_MM`."""
    dense = resample_centerline(points_mm, DENSE_MM)
    return ndimage.gaussian_filter1d(dense, sigma=SMOOTH_MM / DENSE_MM, axis=0, mode="nearest")


def _extend_to_edge(points_mm: np.ndarray, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Extend both ends of a dense polyline ``(P, 3)`` straight along their end tangents to the scan's edge (the
    outermost voxel centres), where the vessel mask ``(Z, Y, X)`` runs all the way there."""
    n = max(2, int(round(TANGENT_MM / DENSE_MM)))
    if len(points_mm) <= n:
        return points_mm
    head = _edge_point(points_mm[0], points_mm[0] - points_mm[n], mask, geometry)
    tail = _edge_point(points_mm[-1], points_mm[-1] - points_mm[-1 - n], mask, geometry)
    return np.concatenate([p for p in (head, points_mm, tail) if p is not None])


def _edge_point(end_mm: np.ndarray, direction: np.ndarray, mask: np.ndarray, geometry: Geometry) -> np.ndarray | None:
    """``(1, 3)`` LPS mm where the ray from ``end_mm`` along ``direction`` leaves the scan, or None when the ray
    leaves the vessel first (the vessel ends inside the scan)."""
    start = geometry.world_to_index(end_mm)
    d = geometry.world_to_index(end_mm + direction / np.linalg.norm(direction)) - start  # index step per mm
    upper = np.asarray(mask.shape, dtype=np.float64) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        exits = np.where(d > 0, (upper - start) / d, np.where(d < 0, -start / d, np.inf))
    reach_mm = float(exits.min())
    if not 0.0 < reach_mm < np.inf:
        return None
    t = np.linspace(0.0, reach_mm, int(np.ceil(reach_mm / (0.25 * min(geometry.spacing)))) + 1)
    kji = np.clip(np.round(start + t[:, None] * d).astype(np.int64), 0, upper.astype(np.int64))
    if not mask[tuple(kji.T)].all():
        return None
    return geometry.index_to_world(start + reach_mm * d)[None]
