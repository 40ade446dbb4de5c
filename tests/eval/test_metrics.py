"""Per-patient scores: the empty rule per metric, agreement with MONAI where the definitions agree,
known geometry, pooling over slices, volumes, the confusion matrix and input validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou
from monai.metrics.utils import get_mask_edges
from scipy.ndimage import binary_erosion, gaussian_filter

from plaque.eval.metrics import (
    cap_distance_mm,
    confusion_matrix,
    hd95_assd,
    mask_surface,
    overlap_scores,
    pooled_surface_distances,
    score_patient,
    slice_counts,
    surface_distances,
    volumes_mm3,
)


def blob(rng: np.random.Generator, shape: tuple[int, int], level: float = 0.5) -> np.ndarray:
    """A random smooth binary blob mask."""
    return gaussian_filter(rng.random(shape), 2.0) > level


def disc(radius: float, size: int = 64, center: tuple[float, float] = (31.5, 31.5)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - center[0], xx - center[1]) < radius


def monai_surface(pred: np.ndarray, true: np.ndarray, spacing: float) -> tuple[float, float]:
    """MONAI's HD95 and symmetric ASSD of two binary 2D masks."""
    p = torch.as_tensor(pred)[None, None].float()
    t = torch.as_tensor(true)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
        asd = compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=spacing)
    return float(hd), float(asd)


def onehot(labels: np.ndarray, c: int = 5) -> torch.Tensor:
    """(N, H, W) labels → (1, C, N, H, W) float one-hot for MONAI."""
    return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.int64), c).permute(3, 0, 1, 2)[None].float()


# --- surfaces -------------------------------------------------------------------------------------------


def edge_cases() -> list[np.ndarray]:
    single = np.zeros((9, 11), bool)
    single[4, 5] = True
    corner = np.zeros((9, 11), bool)
    corner[:3, :4] = True
    row = np.zeros((1, 7), bool)
    row[0, 2:5] = True
    return [single, corner, np.ones((9, 11), bool), row, np.zeros((9, 11), bool)]


@pytest.mark.parametrize("seed", range(4))
def test_surface_is_mask_xor_erosion_and_matches_monai_edges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = [blob(rng, (24, 31)), blob(rng, (24, 31), 0.45), *edge_cases()]
    for m in masks:
        ours = mask_surface(m)
        np.testing.assert_array_equal(ours, m ^ binary_erosion(m))
        edges, _ = get_mask_edges(m, m, crop=False)
        np.testing.assert_array_equal(ours, np.asarray(edges))
    # Border pixels of a mask are surface; a full mask's surface is the image frame.
    full = mask_surface(np.ones((5, 6), bool))
    assert full.sum() == 2 * 5 + 2 * 6 - 4 and not full[1:-1, 1:-1].any()
    # Each slice of a stack is handled on its own (no coupling along the leading axes).
    stack = np.stack(masks[:2])
    np.testing.assert_array_equal(mask_surface(stack), np.stack([mask_surface(m) for m in masks[:2]]))


# --- single-slice surface distances against MONAI --------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_single_slice_hd95_assd_equal_monai_on_random_blobs(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(8, 48, 2))
    pred, true = blob(rng, (h, w), 0.5 + rng.normal(0, 0.02)), blob(rng, (h, w))
    if not (pred.any() and true.any()):
        pytest.skip("degenerate draw")
    spacing = float(rng.uniform(0.1, 2.0))
    hd, asd = hd95_assd(*surface_distances(pred, true, spacing))
    m_hd, m_asd = monai_surface(pred, true, spacing)
    assert hd == pytest.approx(m_hd, rel=1e-6, abs=1e-6)
    assert asd == pytest.approx(m_asd, rel=1e-6, abs=1e-6)


def test_single_slice_edge_cases_equal_monai() -> None:
    single, corner, full, _, _ = edge_cases()
    other = np.zeros_like(single)
    other[1, 9] = True
    far_corner = np.zeros_like(single)
    far_corner[-3:, -2:] = True
    cases = [
        (single, other, 0.7),  # single pixels: HD95 = ASSD = their distance
        (single, single, 1.3),  # identical → 0
        (corner, far_corner, 0.4),  # masks touching the border
        (full, full, 0.5),  # full masks → 0
        (full, single, 0.9),  # full mask against a single pixel
        (corner, full, 1.1),
    ]
    for pred, true, spacing in cases:
        ours = hd95_assd(*surface_distances(pred, true, spacing))
        assert ours == pytest.approx(monai_surface(pred, true, spacing), rel=1e-6, abs=1e-6)
    hd, asd = hd95_assd(*surface_distances(single, other, 0.7))
    assert hd == pytest.approx(math.hypot(3, 4) * 0.7) and asd == pytest.approx(math.hypot(3, 4) * 0.7)
    assert hd95_assd(*surface_distances(full, full, 0.5)) == (0.0, 0.0)


def test_one_empty_mask_gets_the_cap_where_monai_gives_inf() -> None:
    empty = np.zeros((9, 11), bool)
    single, corner = edge_cases()[:2]
    cap = math.hypot(9, 11) * 0.6
    assert cap_distance_mm(9, 11, 0.6) == pytest.approx(cap)
    to_true, to_pred = surface_distances(corner, empty, 0.6)
    np.testing.assert_allclose(to_true, np.full(int(mask_surface(corner).sum()), cap))
    assert to_pred.size == 0
    assert hd95_assd(to_true, to_pred) == pytest.approx((cap, cap))
    to_true, to_pred = surface_distances(empty, single, 0.6)  # missed truth: the truth's pixel is capped
    assert to_true.size == 0 and to_pred.tolist() == pytest.approx([cap])
    # MONAI: HD95 NaN and ASSD inf when exactly one mask is empty, both NaN when both are.
    for pair in ((corner, empty), (empty, single)):
        m_hd, m_asd = monai_surface(*pair, 0.6)
        assert math.isnan(m_hd) and m_asd == math.inf
    assert all(math.isnan(v) for v in monai_surface(empty, empty, 0.6))
    # Ours: NaN when both are empty.
    assert all(math.isnan(v) for v in hd95_assd(*surface_distances(empty, empty, 0.6)))


def test_concentric_discs_hd95_is_radius_difference() -> None:
    spacing = 0.5
    for outer, inner in ((10, 7), (20, 12), (15, 14)):
        hd, asd = hd95_assd(*surface_distances(disc(inner), disc(outer), spacing))
        expected = (outer - inner) * spacing
        # Digital circles: within one pixel of the continuous value.
        assert hd == pytest.approx(expected, abs=spacing)
        assert asd == pytest.approx(expected, abs=spacing)
        assert hd >= asd
    # Scaling the spacing scales the distances.
    a = hd95_assd(*surface_distances(disc(7), disc(12), 0.5))
    b = hd95_assd(*surface_distances(disc(7), disc(12), 1.5))
    assert b == pytest.approx((3 * a[0], 3 * a[1]))


# --- pooling over a patient's slices ----------------------------------------------------------------------


def random_patient(seed: int, n: int = 7, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label stacks with all the per-slice cases: both masks, one empty, both empty."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), np.int64)
    pred = np.zeros_like(truth)
    for i in range(n):
        for lab in (truth, pred):
            for c in (1, 2, 3, 4):
                if rng.random() < 0.6:
                    lab[i][blob(rng, (size, size), 0.53)] = c
    spacing = rng.uniform(0.2, 0.8, n)
    return pred, truth, spacing


@pytest.mark.parametrize("seed", range(3))
def test_pooled_distances_equal_a_loop_over_slices(seed: int) -> None:
    pred, truth, spacing = random_patient(seed)
    to_true, to_pred, capped = pooled_surface_distances(pred, truth, spacing)
    scores = score_patient("p", pred, truth, spacing, 0.5)
    for c in range(5):
        loop_pt, loop_tp, n_capped = [], [], 0
        for i in range(pred.shape[0]):
            a, b = surface_distances(pred[i] == c, truth[i] == c, spacing[i])
            loop_pt.append(a)
            loop_tp.append(b)
            n_capped += (pred[i] == c).any() != (truth[i] == c).any()
        loop_pt, loop_tp = np.concatenate(loop_pt), np.concatenate(loop_tp)
        np.testing.assert_allclose(np.sort(to_true[c]), np.sort(loop_pt), rtol=1e-12)
        np.testing.assert_allclose(np.sort(to_pred[c]), np.sort(loop_tp), rtol=1e-12)
        assert capped[c] == n_capped
        hd, asd = hd95_assd(loop_pt, loop_tp)
        # Pooled: one percentile over all slices' distances, not a mean of per-slice values.
        if loop_pt.size and loop_tp.size:
            assert hd == pytest.approx(max(np.percentile(loop_pt, 95), np.percentile(loop_tp, 95)))
            assert asd == pytest.approx(np.concatenate([loop_pt, loop_tp]).mean())
        np.testing.assert_allclose([scores.hd95_mm[c], scores.assd_mm[c]], [hd, asd], rtol=1e-12)
    assert capped.sum() > 0  # the draws exercise the cap


def test_single_slice_patient_equals_monai_per_class() -> None:
    rng = np.random.default_rng(7)
    truth = np.zeros((1, 40, 40), np.int64)
    pred = np.zeros_like(truth)
    for c in (1, 2, 3):
        truth[0][blob(rng, (40, 40), 0.52)] = c
        pred[0][blob(rng, (40, 40), 0.52)] = c
    scores = score_patient("p", pred, truth, np.array([0.35]), 1.0)
    for c in range(4):
        hd, asd = monai_surface(pred[0] == c, truth[0] == c, 0.35)
        assert scores.hd95_mm[c] == pytest.approx(hd, rel=1e-6)
        assert scores.assd_mm[c] == pytest.approx(asd, rel=1e-6)
    assert math.isnan(scores.hd95_mm[4])


# --- the empty rule, per metric -----------------------------------------------------------------------------


def test_empty_rule_for_every_metric() -> None:
    n, size = 3, 16
    truth = np.zeros((n, size, size), np.int64)
    pred = np.zeros_like(truth)
    truth[:, 4:12, 4:12] = 2
    pred[:, 4:12, 4:12] = 2
    pred[1, 1:3, 1:4] = 3  # class 3 predicted on slice 1 only, absent from the truth
    truth[2, 13:15, 13:15] = 4  # class 4 in the truth on slice 2 only, never predicted
    # class 1 absent from both
    spacing = np.array([0.5, 0.25, 0.4])
    s = score_patient("p", pred, truth, spacing, 1.0)
    # Both empty → NaN everywhere, no capped slice.
    for metric in (s.dice, s.iou, s.hd95_mm, s.assd_mm):
        assert math.isnan(metric[1])
    assert s.capped_slices[1] == 0
    # Truth empty, prediction not → Dice = IoU = 0; distances capped at slice 1's diagonal.
    assert s.dice[3] == 0.0 and s.iou[3] == 0.0
    cap1 = math.hypot(size, size) * 0.25
    assert s.hd95_mm[3] == pytest.approx(cap1) and s.assd_mm[3] == pytest.approx(cap1)
    assert s.capped_slices[3] == 1
    # Prediction empty, truth not → 0 and capped at slice 2's diagonal.
    assert s.dice[4] == 0.0 and s.iou[4] == 0.0
    assert s.hd95_mm[4] == pytest.approx(math.hypot(size, size) * 0.4) and s.capped_slices[4] == 1
    # Perfect class → 1 and 0.
    assert s.dice[2] == 1.0 and s.iou[2] == 1.0 and s.hd95_mm[2] == 0.0 and s.capped_slices[2] == 0
    # nan-means leave the empty class out.
    assert np.nanmean(s.dice[1:]) == pytest.approx(1 / 3)


def test_dice_iou_equal_monai_where_truth_is_present_and_differ_as_documented() -> None:
    pred, truth, spacing = random_patient(11, n=5)
    truth[:, :, :] = np.where(truth == 3, 1, truth)  # class 3 absent from the truth
    pred[pred == 4] = 0  # class 4 never predicted
    pred[truth == 4] = 0
    pred[0, 0, :5] = 3  # ensure class 3 is predicted
    s = score_patient("p", pred, truth, spacing, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m_dice = compute_dice(onehot(pred), onehot(truth), include_background=True)[0].numpy()
        m_iou = compute_iou(onehot(pred), onehot(truth), include_background=True)[0].numpy()
    present = (truth == np.arange(5)[:, None, None, None]).any(axis=(1, 2, 3))
    assert present.tolist() == [True, True, True, False, True]
    np.testing.assert_allclose(s.dice[present], m_dice[present], rtol=1e-6)
    np.testing.assert_allclose(s.iou[present], m_iou[present], rtol=1e-6)
    assert math.isnan(m_dice[3]) and s.dice[3] == 0.0 and s.iou[3] == 0.0  # MONAI: NaN; ours: 0
    assert s.dice[4] == 0.0


def test_overlap_scores_formulas() -> None:
    dice, iou = overlap_scores(np.array([3, 0, 0, 0]), np.array([4, 2, 0, 0]), np.array([5, 0, 3, 0]))
    assert dice[:3].tolist() == pytest.approx([6 / 9, 0.0, 0.0]) and math.isnan(dice[3])
    assert iou[:3].tolist() == pytest.approx([3 / 6, 0.0, 0.0]) and math.isnan(iou[3])


def test_slice_dice_per_slice_with_nan_where_both_empty() -> None:
    truth = np.zeros((2, 4, 4), np.int64)
    pred = np.zeros_like(truth)
    truth[0, :2, :2] = 1  # 4 px
    pred[0, :2, :1] = 1  # 2 px, overlap 2
    pred[1, 3, 3] = 3  # predicted only
    s = score_patient("p", pred, truth, np.array([1.0, 1.0]), 1.0)
    assert s.slice_dice.shape == (2, 5)
    assert s.slice_dice[0, 1] == pytest.approx(2 * 2 / 6)
    assert math.isnan(s.slice_dice[1, 1]) and s.slice_dice[1, 3] == 0.0 and math.isnan(s.slice_dice[0, 3])
    assert math.isnan(s.slice_dice[0, 4]) and math.isnan(s.slice_dice[1, 4])
    inter, p, t = slice_counts(pred, truth)
    assert inter[0].tolist() == [12, 2, 0, 0, 0]
    assert p[1].tolist() == [15, 0, 0, 1, 0] and t[1].tolist() == [16, 0, 0, 0, 0]


# --- volumes and confusion matrix ----------------------------------------------------------------------


def test_volumes_of_a_known_mask() -> None:
    truth = np.zeros((2, 8, 8), np.int64)
    truth[0, :2, :5] = 3  # 10 px at 0.5 mm
    truth[1, :2, :2] = 3  # 4 px at 0.25 mm
    pred = np.zeros_like(truth)
    pred[0, 0, :4] = 3  # 4 px at 0.5 mm
    spacing, step = np.array([0.5, 0.25]), 0.8
    s = score_patient("p", pred, truth, spacing, step)
    assert s.volume_true_mm3[3] == pytest.approx(10 * 0.25 * 0.8 + 4 * 0.0625 * 0.8)
    assert s.volume_pred_mm3[3] == pytest.approx(4 * 0.25 * 0.8)
    assert s.volume_true_mm3[0] == pytest.approx((64 - 10) * 0.25 * 0.8 + (64 - 4) * 0.0625 * 0.8)
    assert s.volume_true_mm3[4] == 0.0
    np.testing.assert_allclose(volumes_mm3(truth, spacing, step), s.volume_true_mm3)
    # All volumes add up to the whole stack.
    assert s.volume_pred_mm3.sum() == pytest.approx(64 * (0.25 + 0.0625) * 0.8)


def test_confusion_matrix_counts() -> None:
    truth = np.array([[[0, 1, 2], [3, 4, 4]]])
    pred = np.array([[[0, 2, 2], [4, 4, 0]]])
    cm = confusion_matrix(pred, truth)
    expected = np.zeros((5, 5), np.int64)
    for t, p in ((0, 0), (1, 2), (2, 2), (3, 4), (4, 4), (4, 0)):
        expected[t, p] += 1
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    pred_s, truth_s, spacing = random_patient(3)
    s = score_patient("p", pred_s, truth_s, spacing, 1.0)
    assert s.confusion.sum() == pred_s.size
    np.testing.assert_array_equal(s.confusion.sum(axis=1), np.bincount(truth_s.ravel(), minlength=5))
    np.testing.assert_array_equal(s.confusion.sum(axis=0), np.bincount(pred_s.ravel(), minlength=5))
    inter, _, _ = slice_counts(pred_s, truth_s)
    np.testing.assert_array_equal(np.diag(s.confusion), inter.sum(axis=0))


def test_scores_shapes_and_dtypes() -> None:
    pred, truth, spacing = random_patient(5, n=4)
    s = score_patient("P007", pred.astype(np.uint8), truth.astype(np.uint8), spacing, 0.5)
    assert s.patient == "P007" and s.n_slices == 4
    for arr in (s.dice, s.iou, s.hd95_mm, s.assd_mm, s.volume_true_mm3, s.volume_pred_mm3):
        assert arr.shape == (5,) and arr.dtype == np.float64
    assert s.capped_slices.shape == (5,) and s.capped_slices.dtype == np.int64
    assert s.confusion.shape == (5, 5) and s.slice_dice.shape == (4, 5)
    finite = ~np.isnan(s.dice)
    assert np.all((s.dice[finite] >= s.iou[finite]) & (s.dice[finite] <= 1))


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "truth", "spacing", "step", "match"),
    [
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int), np.ones(2), 1.0, "differ in shape"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), np.ones(4), 1.0, r"\(N, H, W\)"),
        (np.full((2, 4, 4), 5), np.zeros((2, 4, 4), int), np.ones(2), 1.0, "prediction has class id 5"),
        (np.zeros((2, 4, 4), int), np.full((2, 4, 4), -1), np.ones(2), 1.0, "ground truth has class id -1"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4), int), np.ones(2), 1.0, "integer class ids"),
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), np.array([1.0, 0.0]), 1.0, "positive"),
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), np.array([1.0, np.nan]), 1.0, "positive"),
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), np.ones(3), 1.0, "one value per slice"),
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), np.ones(2), 0.0, "step_mm"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_problem(pred, truth, spacing, step, match) -> None:
    with pytest.raises(ValueError, match=match):
        score_patient("p", pred, truth, spacing, step)
