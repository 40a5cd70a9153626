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
from pathlib import Path

import numpy as np

from ..errors import InputValidationError, OutputWriteError
from . import conditions, schema, series
from .io import (
    ScoreWriter,
    atomic_write,
    check_output_folder,
    iter_matrix_chunks,
    output_format,
    read_matrix,
)
from .monitoring import batch_summary, top_features
from .policy import ScoreResult, fdr_flags
from .scorer import Scorer
from .tables import DEFAULT_CSV, TABLE_SUFFIXES, CsvFormat, iter_table

#: rows read and scored at a time by :func:`score_file` (sets peak memory, not the results)
FILE_CHUNK_ROWS = 65536


def score_file(new_file: str | os.PathLike, model: str | os.PathLike | Scorer = "model.onnx",
               output: str | os.PathLike | None = None, *, threshold: str | float = "auto",
               alpha: float | None = None, score: str | None = None, nan_policy: str = "raise",
               fdr: float | None = None, features: int = 0, summary_json: str | os.PathLike | None = None,
               chunk_rows: int = FILE_CHUNK_ROWS, condition: str | os.PathLike | None = None,
               csv_format: CsvFormat = DEFAULT_CSV, time_order: str = "strict") -> ScoreResult:
    """Score every row of a file and write one output row per input row.

    Parameters
    ----------
    new_file : rows to score: .csv or .parquet (a model fitted on a table matches its columns by
        name, in any order, and ignores the others; a positional model takes numeric columns by
        position), or .npy / .npz (array ``X``), numeric, (n_rows, n_features).
    model : a model file written by ``vae-anomaly fit``, or a loaded Scorer.
    output : where to write (format by suffix: .csv, .jsonl, .parquet, or .npy for the scores alone),
        atomically; None = CSV on stdout. Columns: the model's ID columns (values as read), ``row``
        (0-based input row), ``score`` (nats, higher = more anomalous), ``p_value`` (conformal),
        ``is_anomaly`` (0/1), and ``top_features`` (column names, or indices for a positional
        model) when ``features`` > 0.
    threshold, alpha, score, nan_policy : as in :meth:`Scorer.predict`.
    fdr : flag by Benjamini–Hochberg at this false discovery rate over all of the file's p-values
        (Benjamini & Hochberg 1995; for conformal p-values Bates et al. 2023, Thm 3), instead of by
        threshold. Rows with NaN/inf/missing values under ``nan_policy="flag"`` (p-value 0) are
        always flagged and left out of BH's count.
    features : add each row's ``features`` most anomalous features (0 = no column).
    summary_json : also write :func:`~vae_anomaly.deploy.monitoring.batch_summary` here (atomically).
    chunk_rows : rows read and scored at a time: sets peak memory, not the results.
    condition : a conditional model's condition file, one row per row of ``new_file`` (read whole).
    csv_format : a CSV's header and delimiter (:class:`~vae_anomaly.deploy.tables.CsvFormat`).
    time_order : a window model's rows whose timestamp repeats or goes back: "strict" refuses them,
        "as-read" takes each as the step after the row before it (and warns with their count).

    Returns
    -------
    ScoreResult of the whole file (scores, p-values, flags; no feature terms). ``threshold`` is NaN
    under ``fdr``.

    Raises
    ------
    InputValidationError : unreadable rows, a missing column (named), text in a numeric column,
        wrong column count, NaN/inf/missing values under ``nan_policy="raise"``, conditions that do
        not match the rows (exit code 3).
    ModelArtifactError : the model file is missing, damaged or incompatible (exit code 4).
    OutputWriteError : an output cannot be written; nothing partial is left behind (exit code 5).
    """
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    conds = read_matrix(condition, csv_format) if condition is not None else None
    # a missing, needless or malformed condition file fails before any output is written
    conditions.encode(conds, scorer.condition, 0 if conds is None else len(conds), str(condition or new_file))
    series.check_time_order(time_order, series_model=scorer.series is not None)
    fmt = output_format(output)
    for path in (output, summary_json):
        if path is not None:
            check_output_folder(path)
    name, flag = str(new_file), nan_policy == "flag"
    parts: list[tuple] = []  # (ScoreResult, top features, IDs) per chunk
    feature_sum, finite_rows, done = np.zeros(scorer.n_features), 0, 0
    with contextlib.ExitStack() as stack:
        f = sys.stdout.buffer if output is None else stack.enter_context(atomic_write(output))
        writer = None
        for raw, ids in _read_chunks(new_file, scorer, chunk_rows, csv_format, flag, time_order):
            x = scorer.check_rows(raw, name=name, allow_nonfinite=flag or scorer.masked, first_row=done)
            res = scorer.predict(x, score=score, threshold=threshold, alpha=alpha, name=name,
                                 nan_policy=nan_policy, feature_terms=features > 0,
                                 condition=None if conds is None else conds[done : done + x.shape[0]])
            top = top_features(res.feature_terms, features) if features > 0 else None
            ok = np.isfinite(x).all(axis=1)
            feature_sum += x[ok].sum(axis=0, dtype=np.float64)
            finite_rows += int(ok.sum())
            done += x.shape[0]
            if writer is None:
                writer = ScoreWriter(f, fmt, top_features=features > 0, id_schema=None if ids is None else ids.schema,
                                     feature_names=scorer.feature_names)
            if fdr is None:
                writer.write(res.scores, res.p_values, res.is_anomaly, top, ids)
            parts.append((res, top, ids) if fdr is not None else (res, None, None))
        if conds is not None and len(conds) != done:
            raise InputValidationError(f"{condition}: {len(conds)} condition rows for {done} rows in {new_file}; "
                                       "expected one condition per row, in the same order.")
        scores = np.concatenate([r.scores for r, _, _ in parts]) if parts else np.empty(0, np.float32)
        p_values = np.concatenate([r.p_values for r, _, _ in parts]) if parts else np.empty(0)
        flags = np.concatenate([r.is_anomaly for r, _, _ in parts]) if parts else np.empty(0, bool)
        t = parts[0][0].threshold if parts else float("nan")
        if fdr is not None:  # BH needs every p-value of the file before any flag
            flags, t = fdr_flags(p_values, p_values == 0, fdr), float("nan")
            start = 0
            for res, top, ids in parts:
                n = res.scores.shape[0]
                writer.write(res.scores, res.p_values, flags[start : start + n], top, ids)
                start += n
        writer.close()
        if output is None:
            sys.stdout.flush()
    result = ScoreResult(scores=scores, p_values=p_values, is_anomaly=flags, threshold=t,
                         score_name=parts[0][0].score_name if parts else (score or scorer.default_score),
                         alpha=parts[0][0].alpha if parts and fdr is None else None)
    n_bad = int(np.count_nonzero(p_values == 0))  # only rows with NaN/inf/missing values or scores get p = 0
    if n_bad:
        warnings.warn(f"{new_file}: {n_bad} rows hold missing, NaN or infinite values or gave a non-finite score; "
                      "reported as anomalous (score inf, p_value 0, is_anomaly 1).")
    if summary_json is not None:
        with atomic_write(summary_json, "w") as f:
            json.dump(batch_summary(result, feature_sum / finite_rows if finite_rows else None, scorer), f, indent=1)
    return result


def _read_chunks(path, scorer: Scorer, chunk_rows: int, csv_format: CsvFormat, allow_missing: bool,
                 time_order: str = "strict"):
    """(rows, ID columns or None) chunks of a file: a table model's tables are read by column name
    and encoded (:mod:`vae_anomaly.deploy.schema`); anything else is read as a matrix."""
    if scorer.series is not None:
        yield from _read_series(path, scorer.series, chunk_rows, csv_format, time_order)
        return
    spec = scorer.table
    if spec is None or Path(path).suffix.lower() not in TABLE_SUFFIXES:
        for raw in iter_matrix_chunks(path, chunk_rows, csv_format):
            yield raw, None
        return
    done = 0
    for table in iter_table(path, chunk_rows, csv_format, column_types=schema.read_types(spec),
                            columns=schema.needed_columns(spec)):
        yield (scorer.encode_table(table, name=str(path), first_row=done, allow_missing=allow_missing),
               schema.id_values(table, spec, name=str(path)))
        done += table.num_rows


def _read_series(path, spec: dict, chunk_rows: int, csv_format: CsvFormat, time_order: str):
    """(window rows, ID columns) chunks of a series file for a window model: each input row's window
    of the W steps ending at its timestamp (:class:`vae_anomaly.deploy.series.Windower`, which
    carries the last W − 1 steps across chunks), and its time and ID columns as read."""
    if Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise InputValidationError(f"{path}: a window model scores a series table (.csv or .parquet) with its "
                                   f"time column {spec['time_column']!r}.")
    windower = series.Windower.for_model(spec, name=str(path), time_order=time_order)
    done = 0
    columns = series.needed_columns(spec)
    for table in iter_table(path, chunk_rows, csv_format, column_types=series.read_types(spec), columns=columns):
        t, values = series.table_values(table, spec, name=str(path), first_row=done)
        yield windower.add(t, values), table.select(spec["id_columns"])
        done += table.num_rows
    if windower.inserted:
        warnings.warn(f"{path}: {windower.inserted} missing time steps (gaps) were inserted as missing values "
                      "and left out of the windows' likelihood.")
    if windower.out_of_order:
        warnings.warn(f"{path}: {windower.out_of_order} rows whose timestamp repeats or goes back were taken in file "
                      "order, each as the step after the row before it (--time-order as-read).")


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
