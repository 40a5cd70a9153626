"""Conformal p-values and the auto threshold (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vae_anomaly.deploy.calibration import (
    check_alpha,
    conformal_p_values,
    score_threshold,
)
from vae_anomaly.errors import InputValidationError

floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@given(st.lists(floats, min_size=1, max_size=60), st.lists(floats, min_size=1, max_size=30))
def test_p_values_match_the_definition(cal, new):
    """p = (1 + #{c_i >= s}) / (n + 1), counted by brute force."""
    cal_sorted = np.sort(np.asarray(cal))
    p = conformal_p_values(np.asarray(new), cal_sorted)
    expected = [(1 + sum(c >= s for c in cal)) / (len(cal) + 1) for s in new]
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-12)


@given(st.lists(floats, min_size=1, max_size=200), st.lists(floats, min_size=1, max_size=50),
       st.floats(0.001, 0.5))
def test_threshold_flags_exactly_the_rows_with_p_at_most_alpha(cal, new, alpha):
    cal_sorted = np.sort(np.asarray(cal, dtype=np.float64))
    new = np.asarray(new, dtype=np.float64)
    p = conformal_p_values(new, cal_sorted)
    t = score_threshold(cal_sorted, alpha)
    # away from the float edge alpha*(n+1) == integer, the two rules agree exactly
    k = alpha * (len(cal) + 1)
    if abs(k - round(k)) > 1e-6:
        np.testing.assert_array_equal(new > t, p <= alpha)


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 10_000), st.sampled_from([0.01, 0.05, 0.1]))
def test_false_alarm_rate_is_close_to_alpha_on_gaussian_data(seed, alpha):
    """Exchangeable normal scores: the marginal false-alarm rate is <= alpha (Bates et al. 2023)."""
    rng = np.random.default_rng(seed)
    n_cal, n_new = 999, 20_000
    cal = np.sort(rng.standard_normal(n_cal))
    new = rng.standard_normal(n_new)
    far = np.mean(new > score_threshold(cal, alpha))
    # conditional on the calibration set the rate is Beta-distributed around alpha with
    # sd ~ sqrt(alpha (1 - alpha) / n_cal); 5 sd is a bound that a wrong formula would break
    assert far <= alpha + 5 * np.sqrt(alpha * (1 - alpha) / n_cal)
    assert far >= alpha - 5 * np.sqrt(alpha * (1 - alpha) / n_cal) - 1 / n_cal


def test_alpha_below_one_over_n_plus_one_never_flags():
    cal = np.arange(10.0)
    assert score_threshold(cal, 0.05) == float("inf")  # 1/11 > 0.05
    assert score_threshold(cal, 1 / 11 + 1e-9) == 9.0  # flags only scores above every c_i


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5])
def test_alpha_outside_the_unit_interval_is_refused(alpha):
    with pytest.raises(InputValidationError, match="alpha"):
        check_alpha(alpha)
