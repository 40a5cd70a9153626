"""Conformal p-values and the ``--threshold auto`` rule (numpy only).

Source: split-conformal outlier detection, Bates, Candès, Lei, Romano & Sesia, "Testing for
outliers with conformal p-values", Annals of Statistics 51(1), 2023, eq. (2):

    p(s) = (1 + #{i : c_i >= s}) / (n + 1)

where c_1..c_n are the scores of n calibration rows (normal rows never used for gradient steps)
and s is a new row's score (higher = more anomalous). If the new row is exchangeable with the
calibration rows, P(p <= alpha) <= alpha: flagging rows with p <= alpha has a false-alarm rate of at
most alpha on normal data. Since p >= 1/(n+1), an alpha below 1/(n+1) can never flag.
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import InputValidationError


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise InputValidationError unless 0 < alpha < 1."""
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise InputValidationError(
            f"alpha: got {alpha}; expected a false-alarm rate strictly between 0 and 1, e.g. 0.01."
        )
    return alpha


def conformal_p_values(scores: np.ndarray, calibration_sorted: np.ndarray) -> np.ndarray:
    """Conformal p-values of new scores against sorted calibration scores (Bates et al. 2023, eq. 2).

    Parameters
    ----------
    scores : float array, shape (n_rows,); higher = more anomalous.
    calibration_sorted : float array, shape (n_cal,), sorted ascending.

    Returns
    -------
    float64 array, shape (n_rows,), each in [1/(n_cal+1), 1]; lower = more anomalous.
    """
    cal = np.asarray(calibration_sorted, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n_below = np.searchsorted(cal, s, side="left")  # #{c_i < s}
    return (1.0 + (cal.size - n_below)) / (cal.size + 1.0)


def min_detectable_alpha(n_calibration: int) -> float:
    """The smallest p-value a calibration set of this size can give: 1 / (n + 1)."""
    return 1.0 / (n_calibration + 1.0)


def score_threshold(calibration_sorted: np.ndarray, alpha: float) -> float:
    """The score above which ``p <= alpha``: flag a row when its score is strictly greater.

    Returns +inf when alpha < 1/(n+1) (nothing can be flagged).
    With m = floor(alpha (n+1)) - 1, p(s) <= alpha  <=>  #{c_i >= s} <= m  <=>  s > c_(n-m)
    (the (n-m)-th smallest calibration score).
    """
    cal = np.asarray(calibration_sorted, dtype=np.float64)
    n = cal.size
    m = int(np.floor(alpha * (n + 1) + 1e-9)) - 1
    if m < 0:
        return float("inf")
    return float(cal[n - m - 1]) if m < n else float("-inf")


def warn_if_undetectable(alpha: float, n_calibration: int) -> None:
    """Warn when ``alpha`` is below what ``n_calibration`` rows can resolve."""
    if alpha < min_detectable_alpha(n_calibration):
        warnings.warn(
            f"alpha={alpha} is below 1/(n+1)={min_detectable_alpha(n_calibration):.4g} for the "
            f"{n_calibration} calibration rows: --threshold auto can never flag a row. Fit on more "
            "normal rows (or a larger --val-fraction) or raise --alpha.",
            stacklevel=2,
        )
