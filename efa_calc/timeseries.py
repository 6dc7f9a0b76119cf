"""Means of correlated time series with standard errors (MD averages).

Two estimators of the standard error of the mean of x_1..x_n:

* :func:`statistical_inefficiency` g = 1 + 2 Σ_{t=1}^{T} (1 − t/n) C(t), with C the normalised
  autocorrelation function, summed until it first drops to zero (the estimator of
  Chodera et al., J. Chem. Theory Comput. 3, 26 (2007), as in pymbar); then
  SE = sqrt(g · var(x) / n).
* :func:`blocking_standard_error` (Flyvbjerg & Petersen, J. Chem. Phys. 91, 461 (1989)):
  repeatedly average neighbouring pairs; the naive SE of the blocked series grows and
  plateaus once blocks are longer than the correlation time.  The largest value over the
  levels that keep at least ``min_blocks`` blocks is reported (conservative).
"""

from __future__ import annotations

import numpy as np

__all__ = ["statistical_inefficiency", "mean_and_standard_error", "blocking_standard_error"]


def _series(x) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    if x.size < 4:
        raise ValueError(f"a time series needs at least 4 samples, got {x.size}")
    return x


def statistical_inefficiency(x) -> float:
    """g ≥ 1: the number of correlated samples worth one independent sample (dimensionless)."""
    x = _series(x)
    n = x.size
    dx = x - x.mean()
    var = float(dx @ dx) / n
    if var == 0.0:
        return 1.0
    # autocorrelation by FFT (zero-padded: linear, not circular correlation)
    f = np.fft.rfft(dx, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (var * np.arange(n, 0, -1))
    g = 1.0
    for t in range(1, n - 1):
        if acf[t] <= 0.0:
            break
        g += 2.0 * acf[t] * (1.0 - t / n)
    return max(1.0, g)


def mean_and_standard_error(x) -> tuple[float, float, float]:
    """(mean, standard error of the mean, statistical inefficiency g) of a correlated series."""
    x = _series(x)
    g = statistical_inefficiency(x)
    return float(x.mean()), float(np.sqrt(g * x.var() / x.size)), g


def blocking_standard_error(x, min_blocks: int = 16) -> float:
    """Flyvbjerg–Petersen blocking estimate of the standard error of the mean (same units as x)."""
    x = _series(x)
    best = 0.0
    while x.size >= min_blocks:
        best = max(best, float(np.sqrt(x.var(ddof=1) / x.size)))
        m = x.size // 2
        x = 0.5 * (x[: 2 * m : 2] + x[1 : 2 * m : 2])
    return best
