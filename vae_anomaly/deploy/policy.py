"""The decision policy: conformal p-values, the threshold of ``threshold="auto"``, flags, BH, NaN rows.

Pure numpy over scores and a model's calibration scores; :class:`~vae_anomaly.deploy.scorer.Scorer`
applies it to the scores of :class:`~vae_anomaly.deploy.model_file.ModelFile`. The formulas and
their sources are in :mod:`vae_anomaly.deploy.calibration`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .calibration import (
    benjamini_hochberg,
    check_alpha,
    conformal_p_values,
    score_threshold,
    warn_if_undetectable,
)


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a batch of rows.

    Attributes
    ----------
    scores : float32, shape (n_rows,); higher = more anomalous (units: nats).
    p_values : float64, shape (n_rows,); conformal p-values, lower = more anomalous.
    is_anomaly : bool, shape (n_rows,); ``scores > threshold`` (a row with NaN/inf under
        ``nan_policy="flag"`` has score +inf and p-value 0 and is always flagged).
    threshold : the score threshold used (``inf`` when nothing can be flagged, NaN under ``fdr``).
    score_name : which score ("neg-elbo", "recon-prob" or "iwae").
    alpha : the false-alarm rate of ``threshold="auto"``, or None for a fixed threshold.
    feature_terms : float32, shape (n_rows, n_features), when asked for: the per-feature terms
        (nats, higher = that feature more anomalous; a NaN/inf row has +inf in those columns and 0
        elsewhere); else None.
    """

    scores: np.ndarray
    p_values: np.ndarray
    is_anomaly: np.ndarray
    threshold: float
    score_name: str
    alpha: float | None
    feature_terms: np.ndarray | None = None


def auto_threshold(calibration_sorted: np.ndarray, *, score: str, alpha: float | None, model_alpha: float,
                   rule: dict | None = None) -> tuple[float, float | None]:
    """The score threshold of ``threshold="auto"`` (flag a row when its score is greater) and the
    false-alarm rate it stands for.

    With ``alpha`` given, or when ``rule`` (the model's stored ``auto_threshold``, from
    ``vae-anomaly calibrate --target f1|recall``) is not for ``score``: the conformal threshold at
    ``alpha`` (else ``model_alpha``), score > threshold ⇔ p-value <= alpha. Otherwise the stored
    rule's threshold, an empirical choice with no false-alarm guarantee, and None for the rate.

    Raises
    ------
    InputValidationError : alpha outside (0, 1).
    """
    if alpha is None and rule and rule["score"] == score:
        return float(rule["value"]), None
    alpha = model_alpha if alpha is None else check_alpha(alpha)
    warn_if_undetectable(alpha, calibration_sorted.size)
    return score_threshold(calibration_sorted, alpha), alpha


def nonfinite_scores(scores: np.ndarray, *, name: str = "X", score: str = "neg-elbo") -> np.ndarray:
    """The one rule for a score the graph could not compute: NaN or ±inf becomes +inf, in place.

    Values far outside the training range (1e30 in a table) overflow the graph's float32 arithmetic;
    such a row is the most anomalous there is, never normal. Every path scores through this rule
    (:meth:`~vae_anomaly.deploy.model_file.ModelFile.score_samples` and
    :meth:`~vae_anomaly.deploy.scorer.Scorer.predict`), so the row is scored +inf, given p-value 0
    and flagged by :func:`decide` in the CLI, Python, HTTP and Dask alike, and warned about here.

    Parameters
    ----------
    scores : float32, shape (n,), changed in place.

    Returns
    -------
    bool, shape (n,): the rows whose score was not finite.
    """
    bad = ~np.isfinite(scores)
    if bad.any():
        scores[bad] = np.inf
        warnings.warn(f"{name}: {int(bad.sum())} row(s) gave a non-finite {score} score (values far outside the "
                      "training range, such as 1e30, overflow the model's float32 arithmetic); they are scored "
                      "+inf and reported anomalous with p-value 0. Check those rows for wrong units or parsing.",
                      stacklevel=3)
    return bad


def decide(scores: np.ndarray, nonfinite: np.ndarray, calibration_sorted: np.ndarray, *, threshold: float,
           alpha: float | None, score: str, fdr: float | None = None,
           feature_terms: np.ndarray | None = None) -> ScoreResult:
    """p-values and flags for scores (float32, (n,); +inf on the rows marked ``nonfinite``, bool (n,)).

    A row marked ``nonfinite`` (it held NaN/inf under ``nan_policy="flag"``, or its score was not
    finite, :func:`nonfinite_scores`) gets p-value 0 and is always flagged, never reported as normal. With ``fdr`` the flags are Benjamini–Hochberg's over
    these rows at that false discovery rate (:func:`fdr_flags`), and the result's threshold is NaN;
    otherwise ``scores > threshold``.
    """
    p_values = conformal_p_values(scores, calibration_sorted)
    p_values[nonfinite] = 0.0
    if fdr is not None:
        flags, threshold = fdr_flags(p_values, nonfinite, fdr), float("nan")
    else:
        flags = scores > threshold
    return ScoreResult(scores=scores, p_values=p_values, is_anomaly=flags | nonfinite, threshold=threshold,
                       score_name=score, alpha=alpha, feature_terms=feature_terms)


def fdr_flags(p_values: np.ndarray, nonfinite: np.ndarray, fdr: float) -> np.ndarray:
    """Benjamini–Hochberg flags at false discovery rate ``fdr`` over the rows that were scored,
    plus every ``nonfinite`` row (bool (n,)); a NaN p-value (a series' warm-up row) is not tested.

    A row flagged for a NaN/inf/missing value has no score and is not one of BH's hypotheses: were
    its p-value of 0 counted, each such row would raise every other row's BH cut-off by fdr/n and
    flag normal rows that BH would not (Benjamini & Hochberg 1995, step-up procedure over m scored rows).
    """
    flags = nonfinite.copy()
    tested = ~nonfinite & ~np.isnan(p_values)  # a series' warm-up rows have no p-value and are not tested
    flags[tested] = benjamini_hochberg(p_values[tested], fdr)
    return flags
