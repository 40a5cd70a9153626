"""Dask adapters over the same Scorer (extra ``[dask]``): score arrays and DataFrames out of core.

Each worker process keeps one onnxruntime session per model path, created lazily on first use
with one intra-op thread (Dask's threads or processes provide the parallelism) and never pickled:
only the model path travels in the task graph. Empty blocks and partitions are fine.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd

from ..deploy.scorer import Scorer

_SESSIONS: dict[str, Scorer] = {}
_LOCK = threading.Lock()


def _scorer(model_path: str) -> Scorer:
    """This process's Scorer for ``model_path`` (loaded once, one intra-op thread)."""
    with _LOCK:
        if model_path not in _SESSIONS:
            _SESSIONS[model_path] = Scorer(model_path, intra_op_threads=1)
        return _SESSIONS[model_path]


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


def _score_partition(df: pd.DataFrame, model_path: str, columns: list | None) -> pd.DataFrame:
    scorer = _scorer(model_path)
    x = (df[columns] if columns is not None else df).to_numpy(dtype=np.float32)
    res = scorer.predict(x.reshape(len(df), -1) if len(df) else np.empty((0, scorer.n_features), np.float32))
    return pd.DataFrame({"score": res.scores, "p_value": res.p_values, "is_anomaly": res.is_anomaly},
                        index=df.index)


def score_dataframe(ddf, model_path: str | os.PathLike, columns: list | None = None):
    """Scores, conformal p-values and flags (``--threshold auto``) of a dask DataFrame's rows.

    Parameters
    ----------
    ddf : dask DataFrame; ``columns`` (default: all) are the model's features, in its order.
    model_path : a model file readable by every worker.

    Returns
    -------
    dask DataFrame with the same index and columns score (float32, higher = more anomalous),
    p_value (float64) and is_anomaly (bool).
    """
    meta = pd.DataFrame({"score": pd.Series(dtype=np.float32), "p_value": pd.Series(dtype=np.float64),
                         "is_anomaly": pd.Series(dtype=bool)})
    return ddf.map_partitions(_score_partition, os.fspath(model_path), columns, meta=meta)
