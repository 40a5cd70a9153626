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

from ..errors import InputValidationError

#: the most calibration scores stored per score type (a seeded random subset beyond that)
CALIBRATION_CAP = 20000


def calibration_entries(scores: dict[str, np.ndarray], alpha: float, seed: int = 0) -> dict:
    """The model metadata's calibration fields from each score type's scores on calibration rows.

    Keeps at most :data:`CALIBRATION_CAP` rows (a seeded random subset, the same rows for every
    score), sorted ascending, and the conformal threshold of each score at ``alpha`` (None when
    nothing can be flagged). Warns when alpha < 1/(n+1).

    Returns
    -------
    dict with keys calibration, thresholds, n_calibration, calibration_cap, alpha, auto_threshold.
    """
    n = len(next(iter(scores.values())))
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:CALIBRATION_CAP])
    calibration = {s: np.sort(np.asarray(v)[keep]).astype(float).tolist() for s, v in scores.items()}
    warn_if_undetectable(alpha, keep.size)
    thresholds = {s: score_threshold(np.asarray(c), alpha) for s, c in calibration.items()}
    return {"alpha": alpha, "calibration": calibration, "n_calibration": int(keep.size),
            "calibration_cap": CALIBRATION_CAP, "auto_threshold": None,
            "thresholds": {s: (t if np.isfinite(t) else None) for s, t in thresholds.items()}}


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


#: a fixed threshold that flags more than this share of the calibration rows is warned about
MOST_CALIBRATION_ROWS = 0.5


def warn_if_threshold_flags_most(threshold: float, calibration_sorted: np.ndarray, score: str) -> None:
    """Warn when a fixed score threshold would flag most of the model's calibration rows.

    The calibration rows are normal rows held out at fit, so a threshold that flags more than half
    of them (:data:`MOST_CALIBRATION_ROWS`) was almost surely meant as something else, such as a
    probability: scores are nats, not in [0, 1].
    """
    cal = np.asarray(calibration_sorted, dtype=np.float64)
    share = float(np.mean(cal > threshold)) if cal.size else 0.0
    if share > MOST_CALIBRATION_ROWS:
        warnings.warn(
            f"threshold {threshold:g} flags {share:.0%} of the model's {cal.size} calibration rows (normal rows "
            f"held out at fit; their {score} scores run from {cal[0]:.4g} to {cal[-1]:.4g} nats, higher = more "
            "anomalous): scores are not probabilities. Use the threshold auto with an alpha (--threshold auto --alpha A) "
            "for a known false-alarm rate, or a threshold in that range.",
            stacklevel=3,
        )


def benjamini_hochberg(p_values: np.ndarray, q: float) -> np.ndarray:
    """Rows rejected by the Benjamini–Hochberg procedure at false discovery rate ``q``.

    Benjamini & Hochberg, J. R. Stat. Soc. B 57(1), 1995: with p-values sorted ascending
    p_(1) <= ... <= p_(m), reject the k* smallest where k* = max{k : p_(k) <= k q / m}. With
    conformal p-values (positively dependent through the shared calibration set) this controls the
    expected share of false discoveries at q (Bates et al. 2023, Thm 3).

    Parameters
    ----------
    p_values : float array, shape (m,).
    q : target false discovery rate in (0, 1).

    Returns
    -------
    bool array, shape (m,): True = flagged.
    """
    q = float(q)
    if not 0.0 < q < 1.0:
        raise InputValidationError(f"--fdr: got {q}; expected a false discovery rate strictly between 0 and 1.")
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    out = np.zeros(m, dtype=bool)
    if m == 0:
        return out
    order = np.argsort(p, kind="stable")
    below = np.flatnonzero(p[order] <= q * np.arange(1, m + 1) / m)
    if below.size:
        out[order[: below[-1] + 1]] = True
    return out


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 and false-alarm rate of flagging ``scores > threshold`` (labels 1 = anomaly)."""
    flags = np.asarray(scores) > threshold
    y = np.asarray(labels).astype(bool)
    tp, fp = int(np.sum(flags & y)), int(np.sum(flags & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / y.sum() if y.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    far = fp / (~y).sum() if (~y).sum() else 0.0
    return {"precision": precision, "recall": float(recall), "f1": f1, "false_alarm_rate": float(far),
            "n_flagged": int(flags.sum())}


def threshold_for_target(scores: np.ndarray, labels: np.ndarray, target: str, recall: float = 0.9) -> float:
    """A score threshold chosen on labelled data (flag score > threshold).

    target "f1": the threshold with the highest F1 (ties: the highest threshold);
    target "recall": the highest threshold whose recall is at least ``recall``.
    These are empirical choices on the given rows, with no false-alarm guarantee.

    Raises
    ------
    InputValidationError : no anomalies or no normal rows among the labels, unknown target.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise InputValidationError("--labels: need both normal (0) and anomalous (1) rows to choose a threshold.")
    if target not in ("f1", "recall"):
        raise InputValidationError(f"--target: got {target!r}; expected fpr, f1 or recall.")
    u = np.unique(s)
    candidates = np.r_[-np.inf, u[:-1]]  # flag scores > t; the largest score would flag nothing
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = pos.size - np.searchsorted(pos, candidates, side="right")
    fp = neg.size - np.searchsorted(neg, candidates, side="right")
    rec = tp / pos.size
    if target == "recall":
        ok = np.flatnonzero(rec >= recall)
        return float(candidates[ok[-1]])
    prec = tp / np.maximum(tp + fp, 1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(candidates[best])
