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
from .events import EventLog
from .io import (
    ScoreWriter,
    atomic_write,
    check_output_folder,
    iter_matrix_chunks,
    output_format,
    read_matrix,
)
from .monitoring import attribution, batch_summary
from .policy import ScoreResult, fdr_flags
from .scorer import Scorer
from .series_run import SeriesRun
from .tables import DEFAULT_CSV, TABLE_SUFFIXES, CsvFormat, iter_table

#: rows read and scored at a time by :func:`score_file` (sets peak memory, not the results)
FILE_CHUNK_ROWS = 65536


def score_file(new_file: str | os.PathLike, model: str | os.PathLike | Scorer = "model.onnx",
               output: str | os.PathLike | None = None, *, threshold: str | float = "auto",
               alpha: float | None = None, score: str | None = None, nan_policy: str = "raise",
               fdr: float | None = None, features: int = 0, summary_json: str | os.PathLike | None = None,
               chunk_rows: int = FILE_CHUNK_ROWS, condition: str | os.PathLike | None = None,
               csv_format: CsvFormat = DEFAULT_CSV, time_order: str = "strict",
               state: str | os.PathLike | None = None, events: str | os.PathLike | None = None) -> ScoreResult:
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
        ``is_anomaly`` (0/1), and when ``features`` > 0 ``top_features`` (column names, or indices
        for a positional model) or, for a window model, ``top_metrics`` (its metrics with their
        shares of the score: :func:`~vae_anomaly.deploy.monitoring.top_metrics`).
    threshold, alpha, score, nan_policy : as in :meth:`Scorer.predict`.
    fdr : flag by Benjamini–Hochberg at this false discovery rate over all of the file's p-values
        (Benjamini & Hochberg 1995; for conformal p-values Bates et al. 2023, Thm 3), instead of by
        threshold. Rows with NaN/inf/missing values under ``nan_policy="flag"`` (p-value 0) are
        always flagged and left out of BH's count.
    features : add each row's ``features`` most anomalous features, or a window model's metrics with
        the largest shares of its score (0 = no column).
    summary_json : also write :func:`~vae_anomaly.deploy.monitoring.batch_summary` here (atomically).
    chunk_rows : rows read and scored at a time: sets peak memory, not the results.
    condition : a conditional model's condition file, one row per row of ``new_file`` (read whole).
    csv_format : a CSV's header and delimiter (:class:`~vae_anomaly.deploy.tables.CsvFormat`).
    time_order : a window model's rows whose timestamp repeats or goes back: "strict" refuses them,
        "as-read" takes each as the step after the row before it (and warns with their count).
    state : a window model's state file (:mod:`vae_anomaly.deploy.series_run`): read when it exists,
        so that this file continues the series of the runs before it (its first W − 1 rows get full
        windows, the online calibration goes on), and written after the outputs. Without it the
        series starts here: its first W − 1 rows are scored on padded windows, with no p-value
        (NaN) and never flagged.
    events : a window model's flagged timestamps grouped into events
        (:mod:`vae_anomaly.deploy.events`: start, end, rows, peak score and time, the metrics that
        contribute most), written here (.csv or .jsonl, atomically); the summary JSON lists them too.
        Under ``fdr`` no events are grouped (BH decides the flags only once the file is read).

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
    if scorer.series is not None:
        series.refuse_condition(conds, f"--condition {condition}")
    else:
        conditions.encode(conds, scorer.condition, 0 if conds is None else len(conds), str(condition or new_file))
    series.check_time_order(time_order, series_model=scorer.series is not None)
    if state is not None and scorer.series is None:
        raise InputValidationError("--state: the model was not fitted on a series (fit --window); its rows do not "
                                   "continue each other.")
    if events is not None and (scorer.series is None or Path(events).suffix.lower() not in (".csv", ".jsonl")):
        raise InputValidationError(f"--events: {events}; expected a .csv or .jsonl file, for a model fitted on a "
                                   "series (fit --window).")
    grouped = scorer.series is not None and fdr is None and (events is not None or summary_json is not None)
    run = None if scorer.series is None else SeriesRun(scorer, name=str(new_file), time_order=time_order,
                                                          state=state, score=score, threshold=threshold, alpha=alpha,
                                                          events=grouped)
    fmt = output_format(output)
    for path in (output, summary_json, events):
        if path is not None:
            check_output_folder(path)
    name, flag = str(new_file), nan_policy == "flag"
    parts: list[tuple] = []  # (ScoreResult, top features, IDs) per chunk
    feature_sum, finite_rows, done = np.zeros(scorer.n_features), 0, 0
    with contextlib.ExitStack() as stack:
        f = sys.stdout.buffer if output is None else stack.enter_context(atomic_write(output))
        writer = None
        for raw, ids, warmup, season in _read_chunks(new_file, scorer, chunk_rows, csv_format, flag, run):
            x = scorer.check_rows(raw, name=name, allow_nonfinite=flag or scorer.masked, first_row=done)
            res = scorer.predict(x, score=score, threshold=threshold, alpha=alpha, name=name,
                                 nan_policy=nan_policy, feature_terms=features > 0 or grouped,
                                 condition=season if conds is None else conds[done : done + x.shape[0]])
            if run is not None:
                res = run.decide(res, warmup)
            column, top = attribution(res, scorer, features) if features > 0 else (None, None)
            ok = np.isfinite(x).all(axis=1)
            feature_sum += x[ok].sum(axis=0, dtype=np.float64)
            finite_rows += int(ok.sum())
            done += x.shape[0]
            if writer is None:
                writer = ScoreWriter(f, fmt, column, id_schema=None if ids is None else ids.schema,
                                     named=scorer.feature_names is not None)
            if fdr is None:
                writer.write(res.scores, res.p_values, res.is_anomaly, top, ids)
            parts.append((res, top, ids) if fdr is not None else (res, None, None))
        if conds is not None and len(conds) != done:
            raise InputValidationError(f"{condition}: {len(conds)} condition rows for {done} rows in {new_file}; "
                                       "expected one condition per row, in the same order.")
        scores = np.concatenate([r.scores for r, _, _ in parts]) if parts else np.empty(0, np.float32)
        p_values = np.concatenate([r.p_values for r, _, _ in parts]) if parts else np.empty(0)
        flags = np.concatenate([r.is_anomaly for r, _, _ in parts]) if parts else np.empty(0, bool)
        t = parts[-1][0].threshold if parts else float("nan")  # a series' online threshold: the last
        if fdr is not None:  # BH needs every p-value of the file before any flag
            flags, t = fdr_flags(p_values, p_values == 0, fdr), float("nan")  # warm-up rows (NaN) left out
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
    if run is not None and run.warmup_rows and run.state_path is None:
        warnings.warn(f"{new_file}: its first {run.warmup_rows} rows have fewer than {scorer.series['window'] - 1} "
                      "steps before them: scored on padded windows, with no p-value, and never flagged. To score a "
                      "series slice by slice, pass --state FILE: each run then continues the one before.")
    found = run.events.events() if grouped else None
    if summary_json is not None:
        summary = batch_summary(result, feature_sum / finite_rows if finite_rows else None, scorer)
        if run is not None:
            summary.update(warmup_rows=run.warmup_rows, events=found)
        with atomic_write(summary_json, "w") as f:
            json.dump(summary, f, indent=1)
    if events is not None:
        with atomic_write(events, "w") as f:
            EventLog.write(f, found or [], Path(events).suffix.lower()[1:])
    if run is not None:
        run.save()  # after the outputs: the state never records rows whose output was not written
    return result


def _read_chunks(path, scorer: Scorer, chunk_rows: int, csv_format: CsvFormat, allow_missing: bool,
                 run: SeriesRun | None = None):
    """(rows, ID columns or None, warm-up mask or None, the seasons' condition or None) chunks of a
    file: a window model's series through ``run``; a table model's tables are read by column name and encoded
    (:mod:`vae_anomaly.deploy.schema`); anything else is read as a matrix."""
    if run is not None:
        yield from _read_series(path, run, chunk_rows, csv_format)
        return
    spec = scorer.table
    if spec is None or Path(path).suffix.lower() not in TABLE_SUFFIXES:
        for raw in iter_matrix_chunks(path, chunk_rows, csv_format):
            yield raw, None, None, None
        return
    done = 0
    for table in iter_table(path, chunk_rows, csv_format, column_types=schema.read_types(spec),
                            columns=schema.needed_columns(spec)):
        yield (scorer.encode_table(table, name=str(path), first_row=done, allow_missing=allow_missing),
               schema.id_values(table, spec, name=str(path)), None, None)
        done += table.num_rows


def _read_series(path, run: SeriesRun, chunk_rows: int, csv_format: CsvFormat):
    """(window rows, ID columns, warm-up mask, condition) chunks of a series file for a window model:
    each input row's window of the W steps ending at its timestamp (:meth:`SeriesRun.windows
    <vae_anomaly.deploy.series_run.SeriesRun.windows>`, which carries the last W − 1 steps across
    chunks and runs), and its time and ID columns as read."""
    spec = run.spec
    if Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise InputValidationError(f"{path}: a window model scores a series table (.csv or .parquet) with its "
                                   f"time column {spec['time_column']!r}.")
    done = 0
    for table in iter_table(path, chunk_rows, csv_format, column_types=series.read_types(spec),
                            columns=series.needed_columns(spec)):
        windows, warmup, condition = run.windows(table, first_row=done)
        yield windows, table.select(spec["id_columns"]), warmup, condition
        done += table.num_rows
    windower = run.windower
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
