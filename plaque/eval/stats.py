"""Statistics over per-patient scores: bootstrap intervals, paired comparisons, agreement.

Rules:

- The unit of resampling is the patient: every bootstrap resample draws ``P``
  patients with replacement (``numpy.random.default_rng(seed)``), so results
  are deterministic for a seed. Intervals are percentile intervals
  (numpy's linear percentile) of the resampled means at ``level``.
- NaN marks a patient without a value (the empty rule of
  `plaque.eval.metrics`: a class absent from both prediction and ground
  truth). `bootstrap_ci` keeps NaN patients in the draw and ignores them
  within each resample (``nanmean``); a resample that drew only NaN patients
  has no mean and is left out of the interval. The paired and agreement
  statistics drop a patient when either of its two values is NaN.
- `paired_bootstrap`'s two-sided p-value is twice the fraction of resampled
  mean differences on the other side of 0 from the observed one (0 included),
  capped at 1; 0 means no resample crossed 0, i.e. p < 1 / n_resamples.
- `bland_altman` uses the sample standard deviation (ddof = 1) of
  ``pred − true``; limits of agreement are ``bias ∓ 1.96 sd``.
- `icc_2_1` is ICC(2,1) of Shrout & Fleiss (1979): two-way random effects,
  absolute agreement, single rater, from the two-way ANOVA mean squares of the
  ``n × k`` table (subjects × raters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _check_resampling(n_resamples: int, level: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _resample_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """NaN-ignoring means of ``values`` (P, K) over ``n_resamples`` patient resamples → (R, K), NaN if all NaN."""
    p = values.shape[0]
    idx = np.random.default_rng(seed).integers(0, p, size=(n_resamples, p))
    drawn = values[idx]  # (R, P, K)
    ok = ~np.isnan(drawn)
    count = ok.sum(axis=1)
    total = np.where(ok, drawn, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nan_mean_columns(values: np.ndarray) -> np.ndarray:
    """NaN-ignoring mean of each column of (P, K); NaN for an all-NaN column, without warnings."""
    ok = ~np.isnan(values)
    count = ok.sum(axis=0)
    return np.where(count > 0, np.where(ok, values, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


def _interval(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column of (R, K), NaN resamples left out → (low (K,), high (K,))."""
    alpha = 100.0 * (1.0 - level) / 2.0
    low, high = np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    for k in range(boot.shape[1]):
        col = boot[:, k][~np.isnan(boot[:, k])]
        if col.size:
            low[k], high[k] = np.percentile(col, [alpha, 100.0 - alpha])
    return low, high


def bootstrap_ci_columns(
    values: np.ndarray, *, n_resamples: int, seed: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap percentile intervals of the NaN-ignoring mean of several columns at once.

    Patients (rows) are resampled together, so every column sees the same resamples; column ``k`` equals
    ``bootstrap_ci(values[:, k], ...)`` with the same seed.

    Args:
        values: ``(P, K)`` per-patient values, NaN allowed; ``P >= 1``.
        n_resamples: number of bootstrap resamples.
        seed: seed of the numpy Generator.
        level: coverage of the interval.

    Returns:
        ``(estimate, low, high)``, each ``(K,)`` float64: the NaN-ignoring mean on the full sample and the
        interval; NaN for an all-NaN column.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"values must be (P, K) with at least one patient, got shape {values.shape}")
    _check_resampling(n_resamples, level)
    boot = _resample_means(values, n_resamples, seed)
    low, high = _interval(boot, level)
    return _nan_mean_columns(values), low, high


def bootstrap_ci(values: np.ndarray, *, n_resamples: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Bootstrap percentile interval of the NaN-ignoring mean of per-patient values.

    Args:
        values: ``(P,)`` per-patient values, NaN allowed; ``P >= 1``.
        n_resamples, seed, level: see `bootstrap_ci_columns`.

    Returns:
        ``(estimate, low, high)``: the NaN-ignoring mean of ``values`` and the interval (all NaN when every
        value is NaN).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be (P,), got shape {values.shape}")
    est, low, high = bootstrap_ci_columns(values[:, None], n_resamples=n_resamples, seed=seed, level=level)
    return float(est[0]), float(low[0]), float(high[0])


@dataclass(frozen=True)
class PairedComparison:
    """Result of `paired_bootstrap`.

    Attributes:
        mean_diff: mean of ``a − b`` over the patients with both values.
        low, high: bootstrap percentile interval of the mean difference.
        p_value: two-sided bootstrap p-value of a zero mean difference.
        n: number of patients used.
    """

    mean_diff: float
    low: float
    high: float
    p_value: float
    n: int


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length 1D arrays with the pairs holding a NaN dropped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1D arrays of equal length, got shapes {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_resamples: int, seed: int, level: float = 0.95
) -> PairedComparison:
    """Paired bootstrap of the mean difference ``a − b`` of two methods scored on the same patients.

    Args:
        a, b: ``(P,)`` per-patient values; a patient with NaN in either is dropped.
        n_resamples, seed, level: as in `bootstrap_ci`.

    Returns:
        `PairedComparison`; all NaN (``n = 0``) when no patient has both values. p-value: module docstring.
    """
    _check_resampling(n_resamples, level)
    a, b = _paired(a, b)
    if a.size == 0:
        return PairedComparison(math.nan, math.nan, math.nan, math.nan, 0)
    diff = a - b
    boot = _resample_means(diff[:, None], n_resamples, seed)[:, 0]
    low, high = _interval(boot[:, None], level)
    observed = float(diff.mean())
    if observed > 0:
        p = 2.0 * float(np.mean(boot <= 0))
    elif observed < 0:
        p = 2.0 * float(np.mean(boot >= 0))
    else:
        p = 1.0
    return PairedComparison(observed, float(low[0]), float(high[0]), min(p, 1.0), int(a.size))


def bland_altman(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Bland–Altman agreement of paired measurements ``(P,)`` (e.g. predicted and true volumes).

    Returns:
        ``{"bias", "sd", "lower", "upper", "n"}``: mean and sample SD of ``pred − true``, limits
        ``bias ∓ 1.96 sd``, pairs used (NaN pairs dropped). ``sd`` and limits are NaN with fewer than 2
        pairs; everything is NaN with none.
    """
    p, t = _paired(pred, true)
    diff = p - t
    bias = float(diff.mean()) if diff.size else math.nan
    sd = float(diff.std(ddof=1)) if diff.size >= 2 else math.nan
    return {"bias": bias, "sd": sd, "lower": bias - 1.96 * sd, "upper": bias + 1.96 * sd, "n": int(diff.size)}


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of paired values ``(P,)`` (NaN pairs dropped); NaN when either side is constant
    or fewer than 2 pairs remain."""
    a, b = _paired(x, y)
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    ss_a, ss_b = float(da @ da), float(db @ db)
    if ss_a == 0.0 or ss_b == 0.0:
        return math.nan
    return float(np.clip((da @ db) / math.sqrt(ss_a * ss_b), -1.0, 1.0))


def icc_2_1_table(table: np.ndarray) -> float:
    """ICC(2,1) of an ``(n, k)`` table of ``n`` subjects rated by ``k`` raters (no NaN).

    ``ICC(2,1) = (MSR − MSE) / (MSR + (k − 1) MSE + k (MSC − MSE) / n)`` with the rows' (subjects'),
    columns' (raters') and residual mean squares of the two-way ANOVA. NaN when ``n < 2``, ``k < 2`` or the
    denominator is 0 (e.g. a constant table).
    """
    y = np.asarray(table, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"table must be (n, k), got shape {y.shape}")
    n, k = y.shape
    if n < 2 or k < 2:
        return math.nan
    if np.isnan(y).any():
        raise ValueError("table must not hold NaN")
    grand = y.mean()
    rows, cols = y.mean(axis=1), y.mean(axis=0)
    msr = k * float(((rows - grand) ** 2).sum()) / (n - 1)
    msc = n * float(((cols - grand) ** 2).sum()) / (k - 1)
    mse = float(((y - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse + k * (msc - mse) / n
    if denom == 0.0:
        return math.nan
    return (msr - mse) / denom


def icc_2_1(pred: np.ndarray, true: np.ndarray) -> float:
    """ICC(2,1) (absolute agreement, single rater) of paired values ``(P,)``, NaN pairs dropped; see
    `icc_2_1_table` (here ``k = 2``: prediction and ground truth)."""
    p, t = _paired(pred, true)
    return icc_2_1_table(np.stack([p, t], axis=1))


def mean_absolute_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean of ``|pred − true|`` over paired values ``(P,)``, NaN pairs dropped; NaN with none left."""
    p, t = _paired(pred, true)
    return float(np.abs(p - t).mean()) if p.size else math.nan
