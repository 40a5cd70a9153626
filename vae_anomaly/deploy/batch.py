"""Whole-file work on the deploy side: ``vae-anomaly score`` and ``sample`` (numpy + onnxruntime).

A file is streamed in bounded row chunks through one :class:`~vae_anomaly.deploy.scorer.Scorer`;
the scores, p-values and flags of every row are written (CSV, JSONL, Parquet or .npy, atomically)
as they come, except under ``fdr``, where Benjamini–Hochberg needs every p-value of the file before
any flag. A monitoring summary (counts, quantiles, drift of the batch mean) can be written beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import numpy as np

from ..errors import InputValidationError, OutputWriteError
from . import conditions
from .calibration import benjamini_hochberg
from .io import (
    ScoreWriter,
    atomic_write,
    check_output_folder,
    iter_matrix_chunks,
    output_format,
    read_matrix,
)
from .monitoring import batch_summary, top_features
from .policy import ScoreResult
from .scorer import Scorer

#: rows read and scored at a time by :func:`score_file` (sets peak memory, not the results)
FILE_CHUNK_ROWS = 65536


def score_file(new_file: str | os.PathLike, model: str | os.PathLike | Scorer = "model.onnx",
               output: str | os.PathLike | None = None, *, threshold: str | float = "auto",
               alpha: float | None = None, score: str | None = None, nan_policy: str = "raise",
               fdr: float | None = None, features: int = 0, summary_json: str | os.PathLike | None = None,
               chunk_rows: int = FILE_CHUNK_ROWS, condition: str | os.PathLike | None = None) -> ScoreResult:
    """Score every row of a file and write one output row per input row.

    Parameters
    ----------
    new_file : rows to score: .npy, .npz (array ``X``), .csv or .parquet, numeric, (n_rows, n_features).
    model : a model file written by ``vae-anomaly fit``, or a loaded Scorer.
    output : where to write (format by suffix: .csv, .jsonl, .parquet, or .npy for the scores alone),
        atomically; None = CSV on stdout. Columns: ``row`` (0-based input row), ``score`` (nats,
        higher = more anomalous), ``p_value`` (conformal), ``is_anomaly`` (0/1), and ``top_features``
        when ``features`` > 0.
    threshold, alpha, score, nan_policy : as in :meth:`Scorer.predict`.
    fdr : flag by Benjamini–Hochberg at this false discovery rate over all of the file's p-values
        (Benjamini & Hochberg 1995; for conformal p-values Bates et al. 2023, Thm 3), instead of by
        threshold. Rows with NaN/inf under ``nan_policy="flag"`` (p-value 0) are always flagged.
    features : add each row's ``features`` most anomalous feature indices (0 = no column).
    summary_json : also write :func:`~vae_anomaly.deploy.monitoring.batch_summary` here (atomically).
    chunk_rows : rows read and scored at a time: sets peak memory, not the results.
    condition : a conditional model's condition file, one row per row of ``new_file`` (read whole).

    Returns
    -------
    ScoreResult of the whole file (scores, p-values, flags; no feature terms). ``threshold`` is NaN
    under ``fdr``.

    Raises
    ------
    InputValidationError : unreadable or non-numeric rows, wrong column count, NaN/inf under
        ``nan_policy="raise"``, conditions that do not match the rows (exit code 3).
    ModelArtifactError : the model file is missing, damaged or incompatible (exit code 4).
    OutputWriteError : an output cannot be written; nothing partial is left behind (exit code 5).
    """
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    conds = read_matrix(condition) if condition is not None else None
    # a missing, needless or malformed condition file fails before any output is written
    conditions.encode(conds, scorer.condition, 0 if conds is None else len(conds), str(condition or new_file))
    fmt = output_format(output)
    for path in (output, summary_json):
        if path is not None:
            check_output_folder(path)
    parts: list[tuple] = []  # (ScoreResult, top features) per chunk
    feature_sum, finite_rows, done = np.zeros(scorer.n_features), 0, 0
    with contextlib.ExitStack() as stack:
        f = sys.stdout.buffer if output is None else stack.enter_context(atomic_write(output))
        writer = ScoreWriter(f, fmt, top_features=features > 0)
        for raw in iter_matrix_chunks(new_file, chunk_rows):
            x = scorer.check_rows(raw, name=str(new_file), allow_nonfinite=nan_policy == "flag", first_row=done)
            res = scorer.predict(x, score=score, threshold=threshold, alpha=alpha, name=str(new_file),
                                 nan_policy=nan_policy, feature_terms=features > 0,
                                 condition=None if conds is None else conds[done : done + x.shape[0]])
            top = top_features(res.feature_terms, features) if features > 0 else None
            ok = np.isfinite(x).all(axis=1)
            feature_sum += x[ok].sum(axis=0, dtype=np.float64)
            finite_rows += int(ok.sum())
            done += x.shape[0]
            if fdr is None:
                writer.write(res.scores, res.p_values, res.is_anomaly, top)
            parts.append((res, top) if fdr is not None else (res, None))
        if conds is not None and len(conds) != done:
            raise InputValidationError(f"{condition}: {len(conds)} condition rows for {done} rows in {new_file}; "
                                       "expected one condition per row, in the same order.")
        scores = np.concatenate([r.scores for r, _ in parts]) if parts else np.empty(0, np.float32)
        p_values = np.concatenate([r.p_values for r, _ in parts]) if parts else np.empty(0)
        flags = np.concatenate([r.is_anomaly for r, _ in parts]) if parts else np.empty(0, bool)
        t = parts[0][0].threshold if parts else float("nan")
        if fdr is not None:  # BH needs every p-value of the file before any flag
            flags, t = benjamini_hochberg(p_values, fdr) | (p_values == 0), float("nan")
            start = 0
            for res, top in parts:
                n = res.scores.shape[0]
                writer.write(res.scores, res.p_values, flags[start : start + n], top)
                start += n
        writer.close()
        if output is None:
            sys.stdout.flush()
    result = ScoreResult(scores=scores, p_values=p_values, is_anomaly=flags, threshold=t,
                         score_name=parts[0][0].score_name if parts else (score or scorer.default_score),
                         alpha=parts[0][0].alpha if parts and fdr is None else None)
    n_bad = int(np.count_nonzero(p_values == 0))  # only rows with NaN/inf get p = 0
    if n_bad:
        warnings.warn(f"{new_file}: {n_bad} rows hold NaN or infinite values; reported as anomalous "
                      "(score inf, p_value 0, is_anomaly 1).")
    if summary_json is not None:
        with atomic_write(summary_json, "w") as f:
            json.dump(batch_summary(result, feature_sum / finite_rows if finite_rows else None, scorer), f, indent=1)
    return result


def sample_file(model: str | os.PathLike, output: str | os.PathLike, n: int | None = None, *, seed: int = 0,
                condition: str | os.PathLike | None = None) -> np.ndarray:
    """Draw rows from the prior through the decoder and write them as a .npy array (atomically).

    The library call behind ``vae-anomaly sample``: :meth:`Scorer.sample` (onnxruntime alone).
    ``n`` rows (None = one per row of the ``condition`` file); returns them, float32,
    shape (n, *input_shape).

    Raises
    ------
    InputValidationError : neither ``n`` nor ``condition`` given, n < 0, conditions that do not fit.
    OutputWriteError : ``output`` does not end in .npy, or cannot be written.
    ModelArtifactError : a bad model, or one without a generation graph.
    """
    if not str(output).lower().endswith(".npy"):
        raise OutputWriteError(f"{output}: sample writes a .npy array; expected a path ending in .npy.")
    check_output_folder(output)
    scorer = Scorer(model)
    conds = read_matrix(condition) if condition is not None else None
    if n is None:
        if conds is None:
            raise InputValidationError("n: how many rows to draw? Give n (or a condition file, one row each).")
        n = len(conds)
    rows = scorer.sample(n, condition=conds, seed=seed)
    with atomic_write(output) as f:
        np.save(f, rows, allow_pickle=False)
    return rows
