"""Statistics for reporting runs over seeds: mean +- sd, paired differences with
95 % intervals, and the Wilcoxon signed-rank test (numpy and scipy only).

* :func:`mean_sd`: mean and sample standard deviation (ddof 1) of the runs.
* :func:`t_interval`: mean of paired differences over seeds with a Student-t
  interval, ``d_bar +- t_{0.975, K-1} s_d / sqrt(K)``.
* :func:`paired_bootstrap`: mean of a (seeds x cases) matrix of paired
  differences with a two-way percentile bootstrap interval: seeds and test
  cases are resampled with replacement (the same cases for every resampled
  seed, as every run is tested on the same cases).
* :func:`wilcoxon_p`: two-sided signed-rank p-value of paired values
  (``scipy.stats.wilcoxon``); 1.0 when every difference is 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["mean_sd", "t_interval", "paired_bootstrap", "wilcoxon_p"]


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample sd with ddof 1 (NaN for one value), n) of the finite values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)


def t_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of K paired differences
    (one per seed), ``d_bar +- t_{(1+level)/2, K-1} s_d / sqrt(K)``; NaN bounds for K < 2."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def paired_bootstrap(differences: np.ndarray, level: float = 0.95, n_boot: int = 10000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of paired differences ``differences`` (S seeds, N cases).

    Each of ``n_boot`` resamples draws S seeds and N cases with replacement
    (one case draw shared by the resampled seeds) and takes the mean; the
    interval is the resamples' ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles. The generator is seeded, so the same input gives the same interval.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim == 1:
        d = d[None]
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"paired_bootstrap: expected a (seeds, cases) matrix, got shape {d.shape}")
    rng = np.random.default_rng(seed)
    s, n = d.shape
    seeds = rng.integers(0, s, size=(n_boot, s))
    cases = rng.integers(0, n, size=(n_boot, n))
    # mean over the resampled (seed, case) grid = mean over seeds of the row means at the resampled cases
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = d[seeds[b]][:, cases[b]].mean()
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(low), float(high)


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the pairs (a_i, b_i); 1.0 when a == b everywhere."""
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"wilcoxon_p: {x.shape} and {y.shape} values are not pairs")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)
