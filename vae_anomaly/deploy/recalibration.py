"""Recalibrate a model file from new validation rows, without retraining (numpy + onnxruntime)."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .. import __version__
from ..errors import InputValidationError
from . import artifact, conditions, series
from .calibration import (
    calibration_entries,
    check_alpha,
    threshold_for_target,
    threshold_metrics,
)
from .io import read_matrix, read_rows
from .scorer import Scorer


def recalibrate(model_path: str | os.PathLike, X, *, labels=None, alpha: float | None = None, target: str = "fpr",
                recall: float = 0.9, name: str = "X", condition=None) -> dict:
    """Replace the model's calibration scores (and threshold) with those of new validation rows.

    Parameters
    ----------
    model_path : the model file, rewritten atomically (the graph is unchanged).
    X : array-like (n_rows, n_features) (or images, for an image model), or a table: validation
        rows; without labels they must all be normal.
    condition : a conditional model's conditions, one per row of X.
    labels : optional (n_rows,) 0/1 (1 = anomaly). The calibration scores come from the rows
        labelled 0; the threshold is chosen by ``target``.
    alpha : new false-alarm rate for ``--threshold auto`` (default: keep the model's).
    target : "fpr" (the conformal threshold at alpha, false-alarm rate <= alpha), "f1" (the highest
        F1 on these rows) or "recall" (the highest threshold reaching ``recall`` on these rows).

    Returns
    -------
    dict: the new metadata's calibration summary, plus precision, recall, F1 and the false-alarm
    rate on these rows when labels are given.

    Raises
    ------
    InputValidationError : bad rows or labels, too few normal rows. ModelArtifactError : bad model.
    """
    scorer = Scorer(model_path)
    x = scorer.check_rows(X, name=name, min_rows=1, allow_nonfinite=scorer.masked)  # a window model's gaps are NaN
    c = conditions.encode(condition, scorer.condition, x.shape[0], f"{name} conditions")
    y = None
    if labels is not None:
        y = np.asarray(labels).ravel()
        if y.shape[0] != x.shape[0] or not np.isin(y, (0, 1)).all():
            raise InputValidationError(
                f"--labels: got {y.shape[0]} labels; expected one 0/1 label per row of {name} ({x.shape[0]}).")
    if target != "fpr" and y is None:
        raise InputValidationError(f"--target {target}: needs --labels.")
    normal = x if y is None else x[y == 0]
    normal_c = c if y is None or c is None else c[y == 0]
    if normal.shape[0] < 5:
        raise InputValidationError(f"{name}: {normal.shape[0]} normal rows; expected at least 5 to calibrate on.")
    meta = dict(scorer.metadata)
    alpha = meta["alpha"] if alpha is None else check_alpha(alpha)
    meta.update(calibration_entries({s: scorer.score_samples(normal, score=s, condition=normal_c)
                                                     for s in scorer.score_names}, alpha))
    report = {"n_rows": int(x.shape[0]), "n_calibration": meta["n_calibration"], "alpha": alpha,
              "target": target, "score": scorer.default_score}
    threshold = meta["thresholds"][scorer.default_score]
    threshold = np.inf if threshold is None else threshold
    if y is not None:
        scores = scorer.score_samples(x, condition=c)
        if target != "fpr":
            threshold = threshold_for_target(scores, y, target, recall)
            meta["auto_threshold"] = {"rule": target, "score": scorer.default_score, "value": threshold,
                                      **({"recall": recall} if target == "recall" else {})}
        report.update(threshold_metrics(scores, y, threshold))
    report["threshold"] = threshold if np.isfinite(threshold) else None
    meta["recalibration"] = {"rows": int(x.shape[0]), "target": target,
                             "data_sha256": hashlib.sha256(x.tobytes()).hexdigest()}
    artifact.write_model(model_path, artifact.read_model_bytes(model_path), meta, __version__)
    return report


def recalibrate_file(model_path: str | os.PathLike, val_file: str | os.PathLike, *,
                     labels: str | os.PathLike | None = None, condition: str | os.PathLike | None = None,
                     alpha: float | None = None, target: str = "fpr", recall: float = 0.9) -> dict:
    """:func:`recalibrate` on rows read from files: the library call behind ``vae-anomaly calibrate``.

    ``val_file`` holds the validation rows, ``labels`` a 0/1 label per row (1 = anomaly) and
    ``condition`` a conditional model's condition per row, in any format
    :func:`~vae_anomaly.deploy.io.read_matrix` reads (a .csv or .parquet ``val_file`` is read as a
    table, matched by name for a model fitted on a table; a window model's ``val_file`` is a series
    table, read as ``score`` reads it, and calibrates on its full windows,
    :func:`~vae_anomaly.deploy.series.table_windows`, with their labels). Returns and raises as
    :func:`recalibrate`.
    """
    y = read_matrix(labels).ravel() if labels is not None else None
    model = Scorer(model_path)
    spec = model.series
    conds = read_matrix(condition) if condition is not None else None
    if spec is not None:  # a window model: the series' full windows, its columns matched by name
        series.refuse_condition(conds, f"--condition {condition}")
        rows, y, conds = series.read_windows(val_file, spec, labels=y)
    else:
        rows = read_rows(val_file, table=model.table)
    return recalibrate(model_path, rows, labels=y, alpha=alpha, target=target, recall=recall,
                       name=str(val_file), condition=conds)
