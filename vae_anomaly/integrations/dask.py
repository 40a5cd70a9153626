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
from ..deploy.policy import ScoreResult
from ..deploy.scorer import Scorer
from ..deploy.series_run import SeriesRun, read_state
from ..deploy.tables import as_table, column_map
from ..errors import InputValidationError

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


def score_dataframe(ddf, model_path: str | os.PathLike, columns: list | None = None, *, time_order: str = "strict",
                    state: str | os.PathLike | None = None):
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
    state : a window model's state file (:mod:`vae_anomaly.deploy.series_run`), read when it exists
        so that ``ddf`` continues the series scored before it. The state after ``ddf`` is written
        by the second item returned, when it is computed: compute it after the scores are saved.

    A window model (a metric series, :mod:`vae_anomaly.deploy.series`) scores each partition's
    windows in parallel, each partition after the last W − 1 rows of the one before it, so each
    row's window, and its score, equal local scoring's (``ddf`` sorted by time, partitions of at
    least W − 1 rows); then the p-values and flags are decided in series order, one partition after
    the other (:class:`vae_anomaly.deploy.series_run.SeriesRun`: the warm-up rows, the online
    calibration), as :func:`vae_anomaly.deploy.batch.score_file` decides them.

    Returns
    -------
    dask DataFrame with the same index: the model's ID columns that ``ddf`` has (as in ``ddf``),
    then score (float32, higher = more anomalous), p_value (float64; NaN on a series' warm-up rows)
    and is_anomaly (bool); the same values as local scoring of the whole frame. With ``state``:
    (that DataFrame, a dask Delayed that writes the state).

    Raises
    ------
    InputValidationError : (when computed) a missing feature column, text in a numeric column, a
        missing or non-finite value (column named); (at once) a ``time_order`` not in
        :data:`~vae_anomaly.deploy.series.TIME_ORDERS`, or "as-read" (or a state) for a model not
        fitted on a series; a state file that is not this model's.
    """
    path = os.fspath(model_path)
    scorer = _scorer(path)
    series.check_time_order(time_order, series_model=scorer.series is not None)
    if scorer.series is not None:
        return _score_series(ddf, path, scorer, time_order, state)
    if state is not None:
        raise InputValidationError("state: the model was not fitted on a series (fit --window); its rows do not "
                                   "continue each other.")
    spec = scorer.table
    ids = _present(ddf.columns, (spec or {}).get("id_columns", []))
    meta = ddf._meta[ids].copy() if ids else pd.DataFrame(index=ddf._meta.index)
    meta["score"] = pd.Series(dtype=np.float32)
    meta["p_value"] = pd.Series(dtype=np.float64)
    meta["is_anomaly"] = pd.Series(dtype=bool)
    return ddf.map_partitions(_score_partition, path, None if columns is None else list(columns), ids, meta=meta)


def _series_scores(before: pd.DataFrame | None, df: pd.DataFrame, model_path: str, time_order: str,
                   saved: dict | None) -> tuple[pd.DataFrame, dict]:
    """(the partition's ID columns, scores, fixed-calibration p-values and flags, and warm-up
    marks; the windows' state after it): its windows continue ``before``'s last W − 1 rows, or the
    state ``saved``."""
    scorer = _scorer(model_path)
    spec = scorer.series
    run = SeriesRun(scorer, name="dask partition", time_order=time_order, saved=saved, threshold=np.inf)
    if before is not None:
        run.prime(as_table(before.iloc[max(0, len(before) - (spec["window"] - 1)):].reset_index(drop=True),
                           "dask partition"))
    windows, warmup, season = run.windows(as_table(df.reset_index(drop=True), "dask partition"))
    res = scorer.predict(windows, name="dask partition", threshold=np.inf, condition=season)
    out = df[_present(df.columns, spec["id_columns"])].copy()
    out["score"], out["p_value"], out["is_anomaly"], out["_warmup"] = res.scores, res.p_values, res.is_anomaly, warmup
    return out, run.windower.state()


def _series_decide(part: pd.DataFrame, model_path: str, calibration: dict | None) -> tuple[pd.DataFrame, dict | None]:
    """The partition's p-values and flags decided in series order, continuing ``calibration`` (the
    online calibration's state after the partition before); and that state after it."""
    scorer = _scorer(model_path)
    run = SeriesRun(scorer, name="dask partition", saved={"calibration": calibration})
    res = ScoreResult(scores=part["score"].to_numpy(np.float32), p_values=part["p_value"].to_numpy(np.float64),
                      is_anomaly=part["is_anomaly"].to_numpy(bool), threshold=np.nan, score_name=run.score, alpha=None)
    res = run.decide(res, part["_warmup"].to_numpy(bool))
    out = part.drop(columns="_warmup")
    out["p_value"], out["is_anomaly"] = res.p_values, res.is_anomaly
    return out, run.state()["calibration"]


def _save_state(windows: dict, calibration: dict | None, lengths: list[int], model_path: str, path: str,
                rows_before: int) -> None:
    """Write the state after the last partition: its windows' state, the online calibration's."""
    SeriesRun(_scorer(model_path), name="dask frame", state=path,
              saved={"series": windows, "calibration": calibration, "rows_scored": rows_before + sum(lengths)}).save()


def _score_series(ddf, path: str, scorer: Scorer, time_order: str, state):
    import dask.dataframe as dd
    from dask import delayed

    spec = scorer.series
    saved = None if state is None else read_state(state, scorer.model_id)
    ids = _present(ddf.columns, spec["id_columns"])
    meta = ddf._meta[ids].copy()
    meta["score"] = pd.Series(dtype=np.float32)
    meta["p_value"] = pd.Series(dtype=np.float64)
    meta["is_anomaly"] = pd.Series(dtype=bool)
    parts = ddf.to_delayed()
    scored = [delayed(_series_scores, nout=2)(parts[i - 1] if i else None, part, path, time_order,
                                              saved if i == 0 else None) for i, part in enumerate(parts)]
    calibration, decided = (saved or {}).get("calibration"), []
    for out, _ in scored:  # in series order: each partition's decision continues the one before
        frame_part, calibration = delayed(_series_decide, nout=2)(out, path, calibration)
        decided.append(frame_part)
    frame = dd.from_delayed(decided, meta=meta, divisions=ddf.divisions)
    if state is None:
        return frame
    lengths = [delayed(len)(part) for part in parts]
    return frame, delayed(_save_state)(scored[-1][1], calibration, lengths, path, os.fspath(state),
                                       int((saved or {}).get("rows_scored", 0)))
