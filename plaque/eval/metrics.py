"""Per-patient segmentation scores on a patient's stack of 2D cross-section slices.

A patient's test data is a stack of ``N`` label maps ``(N, H, W)`` (classes
0..C-1), one per cross-section, with an in-plane isotropic pixel spacing
``spacing_mm[n]`` per slice. Slices of one patient may come from several
vessels, so the stack is never treated as a 3D volume: every surface and
distance is computed within a slice, and only counts and distances are pooled
over the patient's slices.

Rules (the evaluation protocol):

- **Dice and IoU** per class, from pixel counts pooled over all the patient's
  slices: ``Dice = 2|P∩T| / (|P| + |T|)``, ``IoU = |P∩T| / |P∪T|``.
- **Empty rule** (nnU-Net's): a class absent from both prediction and ground
  truth scores NaN — left out of means, but counted — for every metric (Dice,
  IoU, HD95, ASSD); a class absent from the ground truth but predicted scores
  Dice = IoU = 0 (and a predicted-but-absent class the same, by the formulas).
  This differs from MONAI's defaults: ``compute_dice(ignore_empty=True)`` gives
  NaN whenever the ground truth is empty (even when the prediction is not), and
  its surface distances give NaN when both masks are empty and, when exactly
  one is, HD95 NaN and ASSD ``inf`` (where we use the cap below).
- **Surface** of a binary 2D mask: ``mask XOR binary_erosion(mask)`` with
  scipy's default cross (4-connected) structuring element and the outside of
  the image counted as background, so mask pixels on the image border are
  surface pixels. This is exactly MONAI's ``get_mask_edges`` (its crop with a
  one-pixel margin followed by scipy's erosion with ``border_value=0``).
- **Surface distances**, per slice, in mm: for each predicted surface pixel
  the Euclidean distance to the nearest true surface pixel of the same slice
  (pixel distance × ``spacing_mm[n]``), and vice versa. Directed distances are
  pooled over the patient's slices; ``HD95 = max(q95(pred→true),
  q95(true→pred))`` with numpy's default (linear) percentile, as MONAI's
  ``torch.quantile``; ``ASSD`` = mean of the two directions' distances
  concatenated (MONAI's ``compute_average_surface_distance(symmetric=True)``).
- **Cap**: on a slice where exactly one of the two masks has the class, the
  surface pixels of the non-empty mask have no counterpart on that slice; each
  gets the cap distance, the slice's patch diagonal ``sqrt(H² + W²) ·
  spacing_mm[n]`` (larger than any distance inside the slice), and the slice is
  counted in ``capped_slices``. Slices where both masks lack the class add
  nothing. A class absent from both for the whole patient has HD95 = ASSD = NaN.
  On a single slice with both masks non-empty, HD95 and ASSD equal MONAI's.
- **Volumes**: class ``c`` occupies ``Σ_n count_c(n) · spacing_mm[n]² ·
  step_mm`` mm³, ``step_mm`` being the spacing of cross-sections along the
  centerline.
- **Confusion matrix**: ``(C, C)`` pixel counts, rows = ground truth, columns =
  prediction.
- **Per-slice Dice** ``(N, C)``: Dice of each slice alone, with the empty rule
  applied per slice (NaN where both lack the class on that slice).

Invalid inputs (shape mismatch, class id out of range, non-positive spacing)
raise ``ValueError`` naming the problem; callers add the file name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from plaque.classes import NUM_CLASSES


@dataclass(frozen=True)
class PatientScores:
    """Scores of one patient's slice stack (``N`` slices, ``C`` classes); see the module docstring.

    Attributes:
        patient: patient id.
        n_slices: ``N``.
        dice: ``(C,)`` float64 pooled Dice; NaN where both prediction and truth lack the class.
        iou: ``(C,)`` float64 pooled IoU; NaN as for ``dice``.
        hd95_mm: ``(C,)`` float64 95th-percentile Hausdorff distance in mm; NaN where both lack the class.
        assd_mm: ``(C,)`` float64 average symmetric surface distance in mm; NaN as for ``hd95_mm``.
        capped_slices: ``(C,)`` int64 number of slices where exactly one mask had the class (cap used).
        volume_true_mm3: ``(C,)`` float64 ground-truth volume per class.
        volume_pred_mm3: ``(C,)`` float64 predicted volume per class.
        confusion: ``(C, C)`` int64 pixel counts, rows = truth, columns = prediction.
        slice_dice: ``(N, C)`` float64 Dice per slice; NaN where both lack the class on that slice.
    """

    patient: str
    n_slices: int
    dice: np.ndarray
    iou: np.ndarray
    hd95_mm: np.ndarray
    assd_mm: np.ndarray
    capped_slices: np.ndarray
    volume_true_mm3: np.ndarray
    volume_pred_mm3: np.ndarray
    confusion: np.ndarray
    slice_dice: np.ndarray


def validate_stack(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: np.ndarray, num_classes: int = NUM_CLASSES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a patient's stack and return ``(pred, truth)`` as int64 ``(N, H, W)`` and spacing float64 ``(N,)``.

    Raises:
        ValueError: not ``(N, H, W)`` with ``N, H, W >= 1``; shapes differ; not integer class ids;
            a class id outside ``0..num_classes-1``; spacing not ``(N,)``, not finite or not positive.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    if pred.ndim != 3 or min(pred.shape) < 1:
        raise ValueError(f"expected a non-empty (N, H, W) stack of label maps, got shape {pred.shape}")
    for name, a in (("prediction", pred), ("ground truth", truth)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} has class id {lo if lo < 0 else hi} outside 0..{num_classes - 1}")
    if spacing.shape != (pred.shape[0],):
        raise ValueError(f"spacing_mm must have one value per slice, shape ({pred.shape[0]},), got {spacing.shape}")
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError("spacing_mm must be finite and positive")
    return pred.astype(np.int64, copy=False), truth.astype(np.int64, copy=False), spacing


def slice_counts(
    pred: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice pixel counts of label maps ``(N, H, W)`` (valid int class ids).

    Returns:
        ``(intersection, predicted, true)``, each ``(N, C)`` int64: pixels of class ``c`` on slice ``n``
        in both, in the prediction, in the ground truth.
    """
    n, c = pred.shape[0], num_classes
    offset = (np.arange(n, dtype=np.int64) * c)[:, None, None]
    size = n * c
    p_idx, t_idx = (pred + offset).ravel(), (truth + offset).ravel()
    inter = np.bincount(t_idx, weights=(pred == truth).ravel(), minlength=size).astype(np.int64)
    return (
        inter.reshape(n, c),
        np.bincount(p_idx, minlength=size).reshape(n, c),
        np.bincount(t_idx, minlength=size).reshape(n, c),
    )


def overlap_scores(intersection: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU from pixel counts of any equal shapes, with the empty rule.

    Returns:
        ``(dice, iou)`` float64 of the counts' shape; NaN where ``predicted + true == 0``, 0 where exactly
        one of them is 0.
    """
    inter = np.asarray(intersection, dtype=np.float64)
    total = np.asarray(predicted, dtype=np.float64) + np.asarray(true, dtype=np.float64)
    union = total - inter
    empty = total == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(empty, np.nan, 2.0 * inter / np.where(empty, 1.0, total))
        iou = np.where(empty, np.nan, inter / np.where(empty, 1.0, union))
    return dice, iou


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``(C, C)`` int64 pixel counts of label maps of equal shape (valid class ids).

    Rows are ground-truth classes, columns predicted classes.
    """
    idx = np.asarray(truth, dtype=np.int64).ravel() * num_classes + np.asarray(pred, dtype=np.int64).ravel()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def volumes_mm3(
    labels: np.ndarray, spacing_mm: np.ndarray, step_mm: float, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Volume per class ``(C,)`` float64 of a stack ``(N, H, W)``: ``Σ_n count_c(n) · spacing_mm[n]² · step_mm``."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    offset = (np.arange(n, dtype=np.int64) * num_classes)[:, None, None]
    counts = np.bincount((labels + offset).ravel(), minlength=n * num_classes).reshape(n, num_classes)
    return _volumes_from_counts(counts, np.asarray(spacing_mm, dtype=np.float64), step_mm)


def _volumes_from_counts(counts: np.ndarray, spacing: np.ndarray, step_mm: float) -> np.ndarray:
    """``counts`` (N, C), ``spacing`` (N,) → (C,) mm³."""
    return (counts * (spacing**2)[:, None]).sum(axis=0) * float(step_mm)


def mask_surface(mask: np.ndarray) -> np.ndarray:
    """Surface of binary masks ``(..., H, W)``, each 2D slice on its own.

    ``mask XOR binary_erosion(mask)`` with the 4-connected cross and the outside of the image counted as
    background (scipy's default ``border_value=0``), so mask pixels on the image border are surface.

    Returns:
        bool array of ``mask``'s shape.
    """
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    inner[..., 1:, :] &= m[..., :-1, :]
    inner[..., :-1, :] &= m[..., 1:, :]
    inner[..., :, 1:] &= m[..., :, :-1]
    inner[..., :, :-1] &= m[..., :, 1:]
    inner[..., 0, :] = False
    inner[..., -1, :] = False
    inner[..., :, 0] = False
    inner[..., :, -1] = False
    return m & ~inner


def cap_distance_mm(height: int, width: int, spacing_mm: float | np.ndarray) -> float | np.ndarray:
    """The cap distance of a slice: its patch diagonal ``sqrt(H² + W²) · spacing_mm``."""
    return np.hypot(height, width) * spacing_mm


def surface_distances(pred_mask: np.ndarray, true_mask: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two binary masks ``(H, W)`` of one slice.

    Returns:
        ``(pred_to_true, true_to_pred)`` float64, one distance per surface pixel of the first mask (row-major
        order). With both masks non-empty: Euclidean distance to the nearest surface pixel of the other mask.
        With exactly one empty: the non-empty mask's surface pixels all get the cap distance
        (`cap_distance_mm`) and the other direction is empty. Both empty: two empty arrays.
    """
    p = np.asarray(pred_mask, dtype=bool)
    t = np.asarray(true_mask, dtype=bool)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"expected two (H, W) masks of equal shape, got {p.shape} and {t.shape}")
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    ps, ts = mask_surface(p), mask_surface(t)
    if not (ps.any() and ts.any()):
        cap = float(cap_distance_mm(*p.shape, spacing_mm))
        return np.full(int(ps.sum()), cap), np.full(int(ts.sum()), cap)
    to_true = distance_transform_edt(~ts) * spacing_mm
    to_pred = distance_transform_edt(~ps) * spacing_mm
    return to_true[ps], to_pred[ts]


def hd95_assd(pred_to_true: np.ndarray, true_to_pred: np.ndarray) -> tuple[float, float]:
    """HD95 and ASSD from pooled directed distances (1D arrays, either may be empty).

    ``HD95 = max`` of the directions' 95th percentiles (numpy's linear method; an empty direction is left
    out); ``ASSD`` = mean of both directions concatenated. Both empty → ``(nan, nan)``.
    """
    a, b = np.asarray(pred_to_true, dtype=np.float64), np.asarray(true_to_pred, dtype=np.float64)
    if a.size + b.size == 0:
        return float("nan"), float("nan")
    hd95 = max(float(np.percentile(d, 95)) for d in (a, b) if d.size)
    return hd95, float(np.concatenate([a, b]).mean())


def pooled_surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: np.ndarray, num_classes: int = NUM_CLASSES
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Directed surface distances of every class, pooled over a stack's slices (the cap rule included).

    Args:
        pred, truth: ``(N, H, W)`` int label maps (valid class ids).
        spacing_mm: ``(N,)`` positive in-plane pixel spacing per slice.
        num_classes: ``C``.

    Returns:
        ``(pred_to_true, true_to_pred, capped)``: two lists of ``C`` 1D float64 arrays (mm) and ``(C,)``
        int64 counts of slices where exactly one mask had the class. Each array holds the same values as the
        concatenation over slices of `surface_distances` of that slice's masks (in another order: the
        slices with both masks first, then the capped ones).
    """
    _, h, w = pred.shape
    classes = np.arange(num_classes)[:, None, None, None]
    p_mask = pred[None] == classes  # (C, N, H, W)
    t_mask = truth[None] == classes
    p_any, t_any = p_mask.any(axis=(2, 3)), t_mask.any(axis=(2, 3))  # (C, N)
    both = p_any & t_any
    # Slices with neither mask are skipped: only (class, slice) pairs with some mask get surfaces.
    some = p_any | t_any
    p_surf = np.zeros_like(p_mask)
    t_surf = np.zeros_like(t_mask)
    p_surf[some], t_surf[some] = mask_surface(p_mask[some]), mask_surface(t_mask[some])
    p_count, t_count = p_surf.sum(axis=(2, 3)), t_surf.sum(axis=(2, 3))  # (C, N)

    # Pairs with both masks: exact EDTs slice by slice, each cropped to the bounding box of the two surfaces
    # (every feature and every query pixel lies inside it, so the distances are unchanged).
    pair_c, pair_n = np.nonzero(both)
    union = p_surf[pair_c, pair_n] | t_surf[pair_c, pair_n]  # (K, H, W)
    rows, cols = union.any(axis=2), union.any(axis=1)
    r0, r1 = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    c0, c1 = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    real_pt: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    real_tp: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for k, (c, i) in enumerate(zip(pair_c.tolist(), pair_n.tolist())):
        window = (slice(r0[k], r1[k]), slice(c0[k], c1[k]))
        ps, ts = p_surf[c, i][window], t_surf[c, i][window]
        real_pt[c].append(distance_transform_edt(~ts)[ps] * spacing_mm[i])
        real_tp[c].append(distance_transform_edt(~ps)[ts] * spacing_mm[i])

    cap = cap_distance_mm(h, w, spacing_mm)  # (N,)
    only_p, only_t = p_any & ~t_any, t_any & ~p_any
    pred_to_true = [
        np.concatenate([*real_pt[c], np.repeat(cap[only_p[c]], p_count[c][only_p[c]])]) for c in range(num_classes)
    ]
    true_to_pred = [
        np.concatenate([*real_tp[c], np.repeat(cap[only_t[c]], t_count[c][only_t[c]])]) for c in range(num_classes)
    ]
    capped = (only_p | only_t).sum(axis=1).astype(np.int64)
    return pred_to_true, true_to_pred, capped


def score_patient(
    patient: str,
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: np.ndarray,
    step_mm: float,
    num_classes: int = NUM_CLASSES,
) -> PatientScores:
    """Score one patient's stack of predicted label maps against the ground truth (rules: module docstring).

    Args:
        patient: patient id, kept in the result.
        pred: ``(N, H, W)`` integer predicted class ids in ``0..num_classes-1``.
        truth: ``(N, H, W)`` integer ground-truth class ids.
        spacing_mm: ``(N,)`` in-plane isotropic pixel spacing of each slice, mm.
        step_mm: spacing of the cross-sections along the centerline, mm (for volumes).
        num_classes: ``C``.

    Raises:
        ValueError: see `validate_stack`; ``step_mm`` not finite and positive.
    """
    if not (np.isfinite(step_mm) and step_mm > 0):
        raise ValueError(f"step_mm must be finite and positive, got {step_mm}")
    pred, truth, spacing = validate_stack(pred, truth, spacing_mm, num_classes)
    inter, p_count, t_count = slice_counts(pred, truth, num_classes)
    dice, iou = overlap_scores(inter.sum(axis=0), p_count.sum(axis=0), t_count.sum(axis=0))
    slice_dice, _ = overlap_scores(inter, p_count, t_count)
    pred_to_true, true_to_pred, capped = pooled_surface_distances(pred, truth, spacing, num_classes)
    hd95 = np.full(num_classes, np.nan)
    assd = np.full(num_classes, np.nan)
    for c in range(num_classes):
        hd95[c], assd[c] = hd95_assd(pred_to_true[c], true_to_pred[c])
    return PatientScores(
        patient=patient,
        n_slices=int(pred.shape[0]),
        dice=dice,
        iou=iou,
        hd95_mm=hd95,
        assd_mm=assd,
        capped_slices=capped,
        volume_true_mm3=_volumes_from_counts(t_count, spacing, step_mm),
        volume_pred_mm3=_volumes_from_counts(p_count, spacing, step_mm),
        confusion=confusion_matrix(pred, truth, num_classes),
        slice_dice=slice_dice,
    )
