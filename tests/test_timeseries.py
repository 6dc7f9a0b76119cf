"""Standard errors of correlated means against the AR(1) process, where g = (1 + φ)/(1 − φ) exactly."""

import numpy as np
import pytest

from efa_calc.timeseries import blocking_standard_error, mean_and_standard_error, statistical_inefficiency


def _ar1(phi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi**2)  # start in the stationary distribution
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_ar1_statistical_inefficiency_and_standard_error(phi):
    x = _ar1(phi, 200_000, seed=1)
    g_exact = (1 + phi) / (1 - phi)
    assert abs(statistical_inefficiency(x) / g_exact - 1) < 0.1
    se_exact = np.sqrt(g_exact / (1 - phi**2) / x.size)  # var(x) = 1/(1 − φ²)
    _, se, _ = mean_and_standard_error(x)
    assert abs(se / se_exact - 1) < 0.06
    assert abs(blocking_standard_error(x) / se_exact - 1) < 0.25


def test_se_covers_the_true_mean():
    """Over 200 short AR(1) runs (mean 0), |mean| < 2 SE about 95 % of the time."""
    hits = [abs(m) < 2 * se for m, se, _ in (mean_and_standard_error(_ar1(0.8, 2000, s)) for s in range(200))]
    assert 0.88 < np.mean(hits) <= 1.0


def test_short_series_is_refused():
    with pytest.raises(ValueError, match="at least 4 samples"):
        mean_and_standard_error([1.0, 2.0])
