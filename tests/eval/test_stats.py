"""Statistics: bootstrap intervals (coverage, determinism, NaN handling), the paired bootstrap, and the
agreement measures against hand-computed and independent values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from plaque.eval.stats import (
    bland_altman,
    bootstrap_ci,
    bootstrap_ci_columns,
    icc_2_1,
    icc_2_1_table,
    mean_absolute_error,
    paired_bootstrap,
    pearson_r,
)

# --- bootstrap_ci -------------------------------------------------------------------------------------------


def reference_bootstrap(values: np.ndarray, n_resamples: int, seed: int, level: float) -> tuple[float, float]:
    """The protocol written as a plain loop: resample patients, nanmean, drop all-NaN resamples, percentiles."""
    idx = np.random.default_rng(seed).integers(0, values.size, size=(n_resamples, values.size))
    means = []
    for row in idx:
        drawn = values[row]
        if not np.isnan(drawn).all():
            means.append(np.nanmean(drawn))
    alpha = 100 * (1 - level) / 2
    low, high = np.percentile(means, [alpha, 100 - alpha])
    return float(low), float(high)


def test_bootstrap_ci_equals_the_protocol_with_nans() -> None:
    values = np.array([0.9, np.nan, 0.7, 0.8, np.nan, 0.4, 0.95])
    est, low, high = bootstrap_ci(values, n_resamples=500, seed=3, level=0.9)
    assert est == pytest.approx(np.nanmean(values))
    assert (low, high) == pytest.approx(reference_bootstrap(values, 500, 3, 0.9))
    assert low < est < high


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    trials, p = 200, 40
    for t in range(trials):
        sample = rng.normal(2.0, 1.0, p)
        _, low, high = bootstrap_ci(sample, n_resamples=1000, seed=t)
        covered += low <= 2.0 <= high
        widths.append(high - low)
    assert 0.88 <= covered / trials <= 0.99
    # Width ≈ 2 · 1.96 · σ / √P.
    assert np.mean(widths) == pytest.approx(2 * 1.96 / math.sqrt(p), rel=0.1)


def test_bootstrap_ci_is_deterministic_per_seed() -> None:
    values = np.random.default_rng(1).random(25)
    a = bootstrap_ci(values, n_resamples=2000, seed=7)
    assert bootstrap_ci(values, n_resamples=2000, seed=7) == a
    b = bootstrap_ci(values, n_resamples=2000, seed=8)
    assert b[0] == a[0] and (b[1], b[2]) != (a[1], a[2])


def test_bootstrap_ci_edge_cases() -> None:
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([np.nan, np.nan]), n_resamples=50, seed=0))
    assert bootstrap_ci(np.array([0.5]), n_resamples=50, seed=0) == (0.5, 0.5, 0.5)
    assert bootstrap_ci(np.full(10, 0.3), n_resamples=50, seed=0) == pytest.approx((0.3, 0.3, 0.3))
    with pytest.raises(ValueError, match="at least one patient"):
        bootstrap_ci(np.array([]), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.ones(3), n_resamples=10, seed=0, level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(np.ones(3), n_resamples=0, seed=0)


def test_bootstrap_columns_equal_single_columns() -> None:
    rng = np.random.default_rng(2)
    values = rng.random((30, 6))
    values[rng.random((30, 6)) < 0.2] = np.nan
    values[:, 5] = np.nan  # an all-NaN column
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warnings
        est, low, high = bootstrap_ci_columns(values, n_resamples=2000, seed=4)
    for k in range(5):
        assert (est[k], low[k], high[k]) == pytest.approx(bootstrap_ci(values[:, k], n_resamples=2000, seed=4))
    assert np.isnan([est[5], low[5], high[5]]).all()


# --- paired_bootstrap -----------------------------------------------------------------------------------------


def test_paired_bootstrap_detects_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(5)
    b = rng.random(30)
    a = b + 0.05 + rng.normal(0, 0.02, 30)
    res = paired_bootstrap(a, b, n_resamples=2000, seed=0)
    assert res.n == 30 and res.mean_diff == pytest.approx(float(np.mean(a - b)))
    assert res.low < 0.05 < res.high and res.low > 0
    assert res.p_value == 0.0
    # Swapping the methods flips the sign, not the p-value.
    swapped = paired_bootstrap(b, a, n_resamples=2000, seed=0)
    assert swapped.mean_diff == pytest.approx(-res.mean_diff) and swapped.p_value == 0.0
    noise = paired_bootstrap(b + rng.normal(0, 0.05, 30), b, n_resamples=2000, seed=0)
    assert noise.low < 0 < noise.high and noise.p_value > 0.05


def test_paired_bootstrap_p_value_is_twice_the_crossing_fraction() -> None:
    a = np.array([0.81, 0.75, 0.9, 0.62, np.nan, 0.7, 0.88])
    b = np.array([0.80, 0.78, 0.85, 0.60, 0.5, np.nan, 0.86])
    res = paired_bootstrap(a, b, n_resamples=999, seed=11)
    d = (a - b)[[0, 1, 2, 3, 6]]
    idx = np.random.default_rng(11).integers(0, d.size, size=(999, d.size))
    means = d[idx].mean(axis=1)
    assert res.n == 5 and res.mean_diff == pytest.approx(d.mean()) and d.mean() > 0
    assert res.p_value == pytest.approx(min(1.0, 2 * np.mean(means <= 0)))
    assert 0 < res.p_value < 1
    assert (res.low, res.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    same = paired_bootstrap(b, b, n_resamples=100, seed=0)
    assert same.mean_diff == 0.0 and same.p_value == 1.0
    none = paired_bootstrap(np.array([np.nan]), np.array([1.0]), n_resamples=10, seed=0)
    assert none.n == 0 and math.isnan(none.p_value)
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(np.ones(3), np.ones(4), n_resamples=10, seed=0)


# --- agreement -------------------------------------------------------------------------------------------


def test_bland_altman_by_hand() -> None:
    pred = np.array([10.0, 12.0, 9.0, 15.0, np.nan])
    true = np.array([9.0, 12.5, 10.0, 13.0, 4.0])
    ba = bland_altman(pred, true)
    diff = [1.0, -0.5, -1.0, 2.0]
    bias = sum(diff) / 4
    sd = math.sqrt(sum((d - bias) ** 2 for d in diff) / 3)
    assert ba["n"] == 4
    assert ba["bias"] == pytest.approx(bias) and ba["sd"] == pytest.approx(sd)
    assert ba["lower"] == pytest.approx(bias - 1.96 * sd) and ba["upper"] == pytest.approx(bias + 1.96 * sd)
    single = bland_altman(np.array([2.0]), np.array([1.0]))
    assert single["bias"] == 1.0 and math.isnan(single["sd"]) and math.isnan(single["upper"])


def test_pearson_r_equals_scipy_and_is_nan_when_constant() -> None:
    rng = np.random.default_rng(9)
    x = rng.random(20)
    y = 0.5 * x + rng.normal(0, 0.1, 20)
    assert pearson_r(x, y) == pytest.approx(sps.pearsonr(x, y)[0], rel=1e-12)
    x_nan, y_nan = x.copy(), y.copy()
    x_nan[3], y_nan[7] = np.nan, np.nan
    keep = ~(np.isnan(x_nan) | np.isnan(y_nan))
    assert pearson_r(x_nan, y_nan) == pytest.approx(sps.pearsonr(x[keep], y[keep])[0], rel=1e-12)
    assert pearson_r(x, -2 * x + 1) == pytest.approx(-1.0)
    assert math.isnan(pearson_r(np.full(5, 3.0), x[:5]))
    assert math.isnan(pearson_r(x[:5], np.zeros(5)))
    assert math.isnan(pearson_r(np.array([1.0]), np.array([2.0])))


def test_icc_shrout_fleiss_published_example() -> None:
    # Shrout & Fleiss (1979), Table 2: 6 targets × 4 judges; published ICC(2,1) = 0.29.
    table = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc_2_1_table(table) == pytest.approx(0.29, abs=0.005)
    # The paper's mean squares: BMS = 11.24, JMS = 32.49, EMS = 1.02.
    n, k = 6, 4
    bms, jms, ems = 11.24, 32.49, 1.02
    assert icc_2_1_table(table) == pytest.approx((bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n), abs=2e-3)


def test_icc_2_1_two_raters_from_the_formula_by_hand() -> None:
    pred = np.array([3.1, 5.0, 2.2, 7.9, 4.4, 6.0])
    true = np.array([3.0, 4.5, 2.5, 8.4, 4.0, 5.1])
    n, k = 6, 2
    grand = (pred.sum() + true.sum()) / (n * k)
    row_means = [(pred[i] + true[i]) / 2 for i in range(n)]
    col_means = [pred.mean(), true.mean()]
    ss_rows = sum(k * (m - grand) ** 2 for m in row_means)
    ss_cols = sum(n * (m - grand) ** 2 for m in col_means)
    ss_total = sum((v - grand) ** 2 for v in [*pred, *true])
    ss_err = ss_total - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    expected = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    assert icc_2_1(pred, true) == pytest.approx(expected, rel=1e-12)
    assert 0.9 < expected < 1
    # Absolute agreement: a constant offset lowers ICC(2,1) although the correlation stays 1.
    assert icc_2_1(true + 2.0, true) < 0.7 and pearson_r(true + 2.0, true) == pytest.approx(1.0)
    assert icc_2_1(true, true) == pytest.approx(1.0)
    assert icc_2_1(np.append(pred, np.nan), np.append(true, 1.0)) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(icc_2_1(np.array([1.0]), np.array([1.0])))


def test_mean_absolute_error() -> None:
    assert mean_absolute_error(np.array([1.0, 4.0, np.nan, 2.0]), np.array([2.0, 2.0, 5.0, 2.0])) == pytest.approx(1.0)
    assert math.isnan(mean_absolute_error(np.array([np.nan]), np.array([1.0])))
