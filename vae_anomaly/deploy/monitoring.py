"""Machine-readable summaries of a scored batch, and per-row attribution: features, or a window
model's metrics with their shares of the score, computed with numpy from a Scorer's outputs (no
torch)."""

from __future__ import annotations

import numpy as np

from .policy import ScoreResult
from .scorer import Scorer

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def batch_summary(result: ScoreResult, batch_mean: np.ndarray | None, scorer: Scorer) -> dict:
    """Summary of a scored batch for monitoring jobs (plain JSON).

    Parameters
    ----------
    result : the batch's ScoreResult.
    batch_mean : float64 (n_features,), the mean of the batch's finite rows, or None if there are none.
    scorer : the Scorer that produced ``result``.

    Returns
    -------
    dict: n_rows, n_anomalies, anomaly_rate, threshold, alpha, score, score_quantiles (of the
    finite scores), model_id, and drift: per column of the model's input, the shift of the batch
    mean from the training mean in training standard deviations, (mean_batch − mean_train) / std_train
    (for a one-hot slot of a categorical column, std 1: the change in that category's share), with
    ``columns`` naming each input column (``name=category`` for a categorical column's slot,
    ``metric@t-k`` for a window model's; None for a model fitted on an unnamed matrix),
    ``max_abs_feature`` the position of the largest absolute shift and ``max_abs_column`` its name.
    """
    n = int(result.scores.shape[0])
    finite = np.isfinite(result.scores)
    mean_train = np.asarray(scorer.metadata["feature_mean"])
    std_train = np.asarray(scorer.metadata["feature_std"])
    drift = (batch_mean - mean_train) / std_train if batch_mean is not None else np.full(mean_train.shape, np.nan)
    worst = int(np.nanargmax(np.abs(drift))) if np.isfinite(drift).any() else None
    names = scorer.input_names
    return {
        "n_rows": n,
        "n_anomalies": int(result.is_anomaly.sum()),
        "anomaly_rate": float(result.is_anomaly.mean()) if n else 0.0,
        "threshold": float(result.threshold) if np.isfinite(result.threshold) else None,
        "alpha": result.alpha,
        "score": result.score_name,
        "score_quantiles": ({str(q): float(v) for q, v in zip(QUANTILES, np.quantile(result.scores[finite], QUANTILES))}
                            if finite.any() else {}),
        "model_id": scorer.model_id,
        "drift": {"mean_shift_in_train_std": [None if not np.isfinite(v) else float(v) for v in drift],
                  "columns": names,
                  "max_abs_feature": worst,
                  "max_abs_column": None if worst is None or names is None else names[worst],
                  "max_abs_shift": None if worst is None else float(abs(drift[worst]))},
    }


def top_features(terms: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k largest per-feature terms, most anomalous first; int (n_rows, k).

    ``terms`` is ``ScoreResult.feature_terms``: −log N(x_j; μ_x,j(z̄), σ²_x,j) at the posterior mean z̄, which sum
    to the reconstruction score (see :mod:`vae_anomaly.training.scores`); a NaN/inf row ranks those columns first.
    """
    k = max(1, min(int(k), terms.shape[1]))
    return np.argsort(-terms, axis=1, kind="stable")[:, :k]


def metric_terms(terms: np.ndarray, n_metrics: int) -> np.ndarray:
    """A window model's per-feature terms summed per metric over its window slots; float64 (n_rows, n_metrics).

    ``terms`` is ``ScoreResult.feature_terms`` of a window model, float32 (n_rows, W·n_metrics), slots
    step by step (``metric@t-k``, :func:`vae_anomaly.deploy.series.slot_names`). Only a term's positive
    part counts (a NaN/inf term, a missing value's, counts 0): a term below 0 is a value the decoder
    predicts tightly, which makes a row less anomalous, not more.
    """
    positive = np.where(np.isfinite(terms), np.maximum(terms, 0.0), 0.0).astype(np.float64)
    return positive.reshape(positive.shape[0], -1, n_metrics).sum(axis=1)


def top_metrics(terms: np.ndarray, metrics: list[str], k: int) -> list[list[dict]]:
    """Each row's k metrics with the largest shares of its score, most anomalous first.

    A metric's share is :func:`metric_terms` over the row's sum of them, so a row's shares over all of
    its metrics sum to 1 (Azure Multivariate Anomaly Detector's per-variable contribution scores; the
    metrics to blame of OmniAnomaly, Su et al., KDD 2019, §3.4). Returns, per row, up to k
    ``{"metric": name, "share": float}`` (metrics with share 0 left out: a row whose every term is
    at most 0 names none).
    """
    per_metric = metric_terms(terms, len(metrics))
    total = per_metric.sum(axis=1, keepdims=True)
    shares = np.divide(per_metric, total, out=np.zeros_like(per_metric), where=total > 0)
    order = np.argsort(-shares, axis=1, kind="stable")[:, : max(1, min(int(k), len(metrics)))]
    return [[{"metric": metrics[j], "share": s} for j, s in zip(row, shares[i, row].tolist()) if s > 0]
            for i, row in enumerate(order.tolist())]


def attribution(result: ScoreResult, scorer: Scorer, k: int) -> tuple[str, list[list]]:
    """The one per-row attribution of every path (CLI, Python, HTTP): (column name, per row a list).

    A window model: ``("top_metrics", ...)``, :func:`top_metrics` (its metrics by name with their
    shares); any other model: ``("top_features", ...)``, the k most anomalous features (:func:`top_features`)
    by name, or by index for a model fitted on an unnamed matrix. ``result`` must hold feature terms.
    """
    if scorer.series is not None:
        return "top_metrics", top_metrics(result.feature_terms, scorer.series["metrics"], k)
    top = top_features(result.feature_terms, k).tolist()
    names = scorer.feature_names
    return "top_features", [[names[j] for j in row] for row in top] if names else top
