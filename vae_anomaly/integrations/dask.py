"""Dask adapters over the same Scorer (extra ``[dask]``): score arrays and DataFrames out of core.

Each worker process keeps one onnxruntime session per model path, created lazily on first use
with one intra-op thread (Dask's threads or processes provide the parallelism) and never pickled:
only the model path travels in the task graph. Empty blocks and partitions are fine.

A DataFrame partition is scored as a table (:meth:`Scorer.predict` on the pandas partition): a
model fitted on a table takes its columns by name, in any order, of any type (numbers, text,
``category``, booleans), and its ID columns are carried into the result; a positional model takes
the numeric columns by position, as before.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd

from ..deploy import series
from ..deploy.scorer import Scorer
from ..deploy.tables import as_table, column_map

_SESSIONS: dict[str, Scorer] = {}
_LOCK = threading.Lock()


def _scorer(model_path: str) -> Scorer:
    """This process's Scorer for ``model_path`` (loaded once, one intra-op thread)."""
    with _LOCK:
        if model_path not in _SESSIONS:
            _SESSIONS[model_path] = Scorer(model_path, intra_op_threads=1)
        return _SESSIONS[model_path]


def _present(columns, wanted: list[str]) -> list[str]:
    """The frame's spellings of the ``wanted`` columns it has (names compared after Unicode NFC,
    :func:`vae_anomaly.deploy.tables.column_map`)."""
    return list(column_map([str(c) for c in columns], wanted, "dask frame").values())


def _score_block(block: np.ndarray, model_path: str) -> np.ndarray:
    return _scorer(model_path).score_samples(block)


def score_array(darr, model_path: str | os.PathLike):
    """Default scores of a dask array of rows.

    Parameters
    ----------
    darr : dask array, shape (n_rows, n_features), numeric; chunked along rows only.
    model_path : a model file readable by every worker.

    Returns
    -------
    dask array, float32, shape (n_rows,): higher = more anomalous, equal to ``Scorer.score_samples``.
    """
    path = os.fspath(model_path)
    if darr.ndim != 2:
        raise ValueError(f"darr: {darr.ndim}-D; expected a 2-D dask array (n_rows, n_features).")
    if darr.numblocks[1] != 1:
        darr = darr.rechunk({1: -1})
    return darr.map_blocks(_score_block, path, drop_axis=1, dtype=np.float32,
                           meta=np.empty((0,), dtype=np.float32))


def _score_partition(df: pd.DataFrame, model_path: str, columns: list | None, ids: list) -> pd.DataFrame:
    scorer = _scorer(model_path)
    res = scorer.predict(df[columns] if columns is not None else df, name="dask partition")
    out = df[ids].copy() if ids else pd.DataFrame(index=df.index)
    out["score"], out["p_value"], out["is_anomaly"] = res.scores, res.p_values, res.is_anomaly
    return out


def score_dataframe(ddf, model_path: str | os.PathLike, columns: list | None = None, *, time_order: str = "strict"):
    """Scores, conformal p-values and flags (``--threshold auto``) of a dask DataFrame's rows.

    Parameters
    ----------
    ddf : dask DataFrame. For a model fitted on a table: its feature columns, matched by name in
        any order (other columns are ignored; text, ``category`` and boolean columns are its
        categorical features). For a positional model: numeric columns, in the model's order.
    model_path : a model file readable by every worker (read here too, for its ID columns).
    columns : score only these columns (default: all).
    time_order : a window model's rows whose timestamp repeats or goes back: "strict" refuses them,
        "as-read" takes each as the step after the row before it
        (:class:`vae_anomaly.deploy.series.Windower`).

    A window model (a metric series, :mod:`vae_anomaly.deploy.series`) scores the rows in order,
    each partition overlapping the previous one by W − 1 rows (``map_overlap``), so each row's window,
    and its score, equal local scoring's (``ddf`` sorted by time, partitions of at least W − 1 rows).

    Returns
    -------
    dask DataFrame with the same index: the model's ID columns that ``ddf`` has (as in ``ddf``),
    then score (float32, higher = more anomalous), p_value (float64) and is_anomaly (bool); the same
    values as :meth:`Scorer.predict` of the whole frame.

    Raises
    ------
    InputValidationError : (when computed) a missing feature column, text in a numeric column, a
        missing or non-finite value (column named); (at once) a ``time_order`` not in
        :data:`~vae_anomaly.deploy.series.TIME_ORDERS`, or "as-read" for a model not fitted on a series.
    """
    path = os.fspath(model_path)
    scorer = _scorer(path)
    series.check_time_order(time_order, series_model=scorer.series is not None)
    if scorer.series is not None:
        return _score_series(ddf, path, scorer.series, time_order)
    spec = scorer.table
    ids = _present(ddf.columns, (spec or {}).get("id_columns", []))
    meta = ddf._meta[ids].copy() if ids else pd.DataFrame(index=ddf._meta.index)
    meta["score"] = pd.Series(dtype=np.float32)
    meta["p_value"] = pd.Series(dtype=np.float64)
    meta["is_anomaly"] = pd.Series(dtype=bool)
    return ddf.map_partitions(_score_partition, path, None if columns is None else list(columns), ids, meta=meta)


def _series_partition(df: pd.DataFrame, model_path: str, spec: dict, time_order: str) -> pd.DataFrame:
    """Scores of a partition of a series, with the W − 1 rows before it prepended by ``map_overlap``
    (those rows are dropped from the result by Dask)."""
    scorer = _scorer(model_path)
    table = as_table(df.reset_index(drop=True), "dask partition")
    t, values = series.table_values(table, spec, name="dask partition")
    windower = series.Windower.for_model(spec, name="dask partition", time_order=time_order)
    res = scorer.predict(windower.add(t, values), name="dask partition")
    out = df[_present(df.columns, spec["id_columns"])].copy()
    out["score"], out["p_value"], out["is_anomaly"] = res.scores, res.p_values, res.is_anomaly
    return out


def _score_series(ddf, path: str, spec: dict, time_order: str):
    ids = _present(ddf.columns, spec["id_columns"])
    meta = ddf._meta[ids].copy()
    meta["score"] = pd.Series(dtype=np.float32)
    meta["p_value"] = pd.Series(dtype=np.float64)
    meta["is_anomaly"] = pd.Series(dtype=bool)
    return ddf.map_overlap(_series_partition, spec["window"] - 1, 0, path, spec, time_order, meta=meta)
