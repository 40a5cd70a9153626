"""Metric series: sliding windows over a table whose rows are timestamps (numpy + pyarrow; no torch).

A window model sees W consecutive time steps of d metrics, flattened step by step (the oldest step
first, each step's metrics in order): the row of timestamp t holds the values at t − W + 1, ..., t,
and its score is the score of timestamp t (Donut: Xu et al., "Unsupervised Anomaly Detection via
Variational Auto-Encoder for Seasonal KPIs in Web Applications", WWW 2018).

* **Time column**: ``time_column``, else a column named ``timestamp`` or ``time``, else the one
  date/time column. Timestamps must increase strictly: a repeated or earlier timestamp stops with
  its row named. With ``time_order="as-read"`` such a row is taken, in file order, as the step after
  the row before it (for logs whose clock repeats an hour at a daylight-saving change or steps
  back), and the rows so taken are counted.
* **Step and gaps**: the step is the median difference between consecutive timestamps; a longer
  difference is a gap of round(difference / step) − 1 missing steps, inserted as missing values
  (NaN), never glued together. The model leaves missing values out of the likelihood (masked).
* **The first W − 1 timestamps** have fewer than W − 1 steps before them: their windows are padded
  with missing values at the front, so they are scored on the steps that exist (which makes them
  flag less readily than a full window).
* **Streaming**: :class:`Windower` carries the last W − 1 steps from one chunk to the next, so the
  windows, and the scores, are the same for any chunk size.

The metadata entry ``series`` records ``window`` (W), ``time_column``, ``step_seconds``,
``metrics`` and ``id_columns`` (the time column first).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputValidationError
from .tables import arrow_compute, load_pyarrow, to_numpy

#: the default window when ``--window auto`` (benchmarks/README.md, "NAB: metric series")
DEFAULT_WINDOW = 64
#: how rows whose timestamp repeats or goes back are treated: refused, or taken in file order
TIME_ORDERS = ("strict", "as-read")
_TIME_NAMES = ("timestamp", "time")


def find_time_column(arrow_schema, time_column: str | None, name: str) -> str:
    """The series' time column: ``time_column`` if given, else ``timestamp`` or ``time``, else the one
    date/time column.

    Raises
    ------
    InputValidationError : the named column is missing, or none (or several) can be chosen.
    """
    pa = load_pyarrow()
    names = list(arrow_schema.names)
    if time_column is not None:
        if time_column not in names:
            raise InputValidationError(f"--time-column: {name} has no column {time_column!r}; its columns are "
                                       f"{', '.join(map(repr, names[:12]))}.")
        return time_column
    for candidate in _TIME_NAMES:
        if candidate in names:
            return candidate
    temporal = [f.name for f in arrow_schema if pa.types.is_temporal(f.type)]
    if len(temporal) == 1:
        return temporal[0]
    raise InputValidationError(
        f"{name}: which column holds the time? Found {'none' if not temporal else ', '.join(map(repr, temporal))} "
        "among the date/time columns and no column named 'timestamp' or 'time'. Pass --time-column NAME.")


def timestamps_ns(column, name: str, time_column: str, first_row: int = 0) -> np.ndarray:
    """A time column (timestamps, dates, or text such as ``2026-01-01 00:05:00``) as int64 nanoseconds.

    Raises
    ------
    InputValidationError : a missing or unreadable timestamp (its row named).
    """
    pa = load_pyarrow()
    if column.null_count:
        r = int(np.argmax(to_numpy(column.is_null(), bool)))
        raise InputValidationError(f"{name}: column {time_column!r}, data row {first_row + r}, is empty; "
                                   "expected a timestamp on every row.")
    try:
        ts = arrow_compute().cast(column, pa.timestamp("ns"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InputValidationError(f"{name}: column {time_column!r} does not hold timestamps ({str(e)[:100]}); "
                                   "expected e.g. 2026-01-01 00:05:00.") from None
    return to_numpy(ts.cast(pa.int64()), np.int64)


def check_time_order(time_order: str, *, series_model: bool = True) -> None:
    """Refuse a ``time_order`` that is not one of :data:`TIME_ORDERS`, or other than "strict" for a
    model that was not fitted on a series (its rows have no time order).

    Raises
    ------
    InputValidationError : either case, naming ``--time-order``.
    """
    if time_order not in TIME_ORDERS:
        raise InputValidationError(f"--time-order: got {time_order!r}; expected one of {', '.join(TIME_ORDERS)}.")
    if time_order != "strict" and not series_model:
        raise InputValidationError("--time-order: the model was not fitted on a series (fit --window); its rows "
                                   "have no time order.")


def _not_increasing(t: np.ndarray, previous: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(the timestamps with ``previous`` in front when given, the indices i where full[i + 1] <= full[i])."""
    full = t if previous is None else np.concatenate([[previous], t])
    return full, np.flatnonzero(np.diff(full) <= 0)


def check_order(t: np.ndarray, name: str, time_column: str, first_row: int = 0, previous: int | None = None) -> None:
    """Refuse timestamps that repeat or go back, naming the first such row."""
    full, bad = _not_increasing(t, previous)
    if bad.size:
        r = first_row + int(bad[0]) + (1 if previous is None else 0)
        what = "repeats the previous timestamp" if full[bad[0] + 1] == full[bad[0]] else "is earlier than the previous row"
        raise InputValidationError(f"{name}: column {time_column!r}, data row {r}, {what}; expected strictly "
                                   "increasing timestamps. Sort the rows and drop duplicates, or pass --time-order "
                                   "as-read to take the rows in file order.")


def infer_step(t: np.ndarray, name: str) -> int:
    """The series' step in nanoseconds: the median of the positive differences between consecutive
    timestamps.

    Raises
    ------
    InputValidationError : fewer than two distinct timestamps.
    """
    diffs = np.diff(t)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise InputValidationError(f"{name}: {np.unique(t).size} distinct timestamps; expected at least 2 to learn "
                                   "the series' step.")
    return int(np.median(diffs))


def positions(t: np.ndarray, step: int, previous_t: int | None = None, previous_pos: int = -1) -> np.ndarray:
    """Each timestamp's step index (int64): the previous index plus max(1, round(difference / step)),
    so a gap of k missing steps skips k indices. Only differences count, so the indices of a chunk
    follow from the row before it, wherever the series was cut."""
    diffs = np.diff(t, prepend=t[0] if previous_t is None else previous_t)
    inc = np.maximum(1, np.rint(diffs / step)).astype(np.int64)
    if previous_t is None and inc.size:
        inc[0] = 1
    return previous_pos + np.cumsum(inc)


def series_spec(arrow_schema, *, window: int, time_column: str | None = None, exclude=None, id_columns=None,
                name: str = "X") -> dict:
    """The ``series`` metadata entry (without ``step_seconds``) for a table's columns: the time column,
    the metrics (every other numeric column that is not excluded or an ID) and the ID columns.

    Raises
    ------
    InputValidationError : W < 2, no time column, a named column the table lacks, a time or ID
        column named as a score output column, a non-numeric column left as a metric, no metric.
    """
    from .schema import check_output_names, column_names

    pa = load_pyarrow()
    if int(window) < 2:
        raise InputValidationError(f"--window: got {window}; expected a window of at least 2 time steps.")
    time = find_time_column(arrow_schema, time_column, name)
    names = list(arrow_schema.names)
    exclude, ids = column_names(exclude), [c for c in column_names(id_columns) if c != time]
    check_output_names([time, *ids], name)
    for flag, given in (("--exclude", exclude), ("--id-columns", ids)):
        unknown = [c for c in given if c not in names]
        if unknown:
            raise InputValidationError(f"{flag}: {name} has no column {unknown[0]!r}.")
    metrics = []
    for field in arrow_schema:
        if field.name == time or field.name in exclude or field.name in ids:
            continue
        t = field.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t)):
            raise InputValidationError(
                f"{name}: column {field.name!r} holds {t}; a window model takes numeric metrics. Pass "
                f"--exclude {field.name} or --id-columns {field.name}.")
        metrics.append(field.name)
    if not metrics:
        raise InputValidationError(f"{name}: no metric column beside the time column {time!r}; expected at least one.")
    return {"window": int(window), "time_column": time, "step_seconds": None, "metrics": metrics,
            "id_columns": [time, *ids], "exclude": exclude}


def table_values(table, spec: dict, *, name: str = "X", first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps int64 ns (n,), metric values float64 (n, d), NaN where missing) of a table chunk.

    Raises
    ------
    InputValidationError : a missing column, an unreadable timestamp, text in a metric (named).
    """
    from .schema import encode, positional

    time = spec["time_column"]
    if time not in table.column_names:
        raise InputValidationError(f"{name}: no time column {time!r}; the model was fitted on a series with it.")
    t = timestamps_ns(table.column(time), name, time, first_row)
    values = encode(table, positional(spec["metrics"]), name=name, first_row=first_row, allow_missing=True)
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise InputValidationError(f"{name}: column {spec['metrics'][c]!r}, data row {first_row + int(r)}, holds "
                                   f"{values[r, c]}; expected a finite value or an empty cell.")
    return t, values


def read_types(spec: dict) -> dict:
    """{column: pyarrow type} to read a series CSV with: metrics float64, the time and ID columns text."""
    pa = load_pyarrow()
    return {**{m: pa.float64() for m in spec["metrics"]}, **{c: pa.string() for c in spec["id_columns"]}}


def slot_names(metrics: list[str], window: int) -> list[str]:
    """The name of each column of a window row: ``metric@t-k``, k steps before the row's timestamp."""
    return [f"{m}@t-{window - 1 - s}" for s in range(window) for m in metrics]


def slot_metrics(metrics: list[str], window: int) -> list[str]:
    """The metric each column of a window row belongs to, in :func:`slot_names`' order."""
    return [m for _ in range(window) for m in metrics]


class Windower:
    """Turns chunks of a series (timestamps and metric values) into window rows, one per input row.

    Parameters
    ----------
    window : W, the time steps a window holds.
    step : the series' step, nanoseconds.
    name, time_column : for error messages.
    time_order : "strict" refuses a timestamp that repeats or goes back; "as-read" takes such a row as
        the step after the row before it and counts it in ``out_of_order``.

    The state (the last W − 1 steps, the last timestamp) carries over from one :meth:`add` to the
    next, so the windows do not depend on how the series is chunked.
    """

    def __init__(self, window: int, step: int, *, name: str = "X", time_column: str = "timestamp",
                 time_order: str = "strict"):
        check_time_order(time_order)
        self.window, self.step, self.name, self.time_column = int(window), int(step), name, time_column
        self.time_order = time_order
        self.out_of_order = 0
        self.positions = np.empty(0, np.int64)  # the step index of each row of the last chunk
        self.last_t: int | None = None
        self.last_pos = -1
        self.tail: np.ndarray | None = None  # (W − 1, d): the steps before the next chunk
        self.rows = 0
        self.inserted = 0

    @classmethod
    def for_model(cls, spec: dict, *, name: str = "X", time_order: str = "strict") -> Windower:
        """The Windower of a window model's ``series`` metadata (its W, step and time column)."""
        return cls(spec["window"], int(round(spec["step_seconds"] * 1e9)), name=name,
                   time_column=spec["time_column"], time_order=time_order)

    def add(self, t: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The window rows of the chunk's input rows.

        Parameters
        ----------
        t : int64 (n,) timestamps in nanoseconds, strictly increasing (also across chunks) unless
            ``time_order`` is "as-read".
        values : float64 (n, d), NaN for missing values.

        Returns
        -------
        float64 (n, W·d): row i holds the values at the W steps ending at t[i], oldest first; missing
        steps (gaps, the start of the series) are NaN.

        Raises
        ------
        InputValidationError : timestamps that repeat or go back (``time_order`` "strict").
        """
        n, d = values.shape
        w = self.window
        if self.time_order == "strict":
            check_order(t, self.name, self.time_column, self.rows, self.last_t)
        else:
            self.out_of_order += _not_increasing(t, self.last_t)[1].size
        if self.tail is None:
            self.tail = np.full((w - 1, d), np.nan)
        if n == 0:
            return np.empty((0, w * d))
        pos = positions(t, self.step, self.last_t, self.last_pos)
        self.positions = pos
        span = int(pos[-1] - self.last_pos)                   # steps from the last known one to this chunk's end
        full = np.full((w - 1 + span, d), np.nan)
        full[: w - 1] = self.tail
        full[w - 1 + (pos - self.last_pos - 1)] = values
        self.inserted += span - n
        windows = np.lib.stride_tricks.sliding_window_view(full, (w, d))[:, 0]  # (span, w, d)
        out = windows[pos - self.last_pos - 1].reshape(n, w * d)
        self.tail = full[len(full) - (w - 1):] if w > 1 else full[:0]
        self.last_pos, self.last_t, self.rows = int(pos[-1]), int(t[-1]), self.rows + n
        return out


def fit_windows(table, spec: dict, *, val_fraction: float, labels: np.ndarray | None = None, name: str = "X",
                min_val: int = 5, time_order: str = "strict") -> tuple[np.ndarray, np.ndarray, dict]:
    """Training and calibration windows of a series, and its spec with the step filled in.

    Known anomalous points (``labels`` == 1, one label per row) become missing values, so they are
    left out of the likelihood (Donut's modified ELBO). Windows start at the W-th time step (every
    training window has W − 1 steps of context). The calibration windows are the last
    ``val_fraction`` of them, a block at the end of the training period: windows of one series are
    not exchangeable, so a random split would calibrate on windows interleaved with (and
    overlapping) the training windows. W − 1 windows between the two blocks are dropped, so that no
    calibration window shares a time step with a training window. ``time_order`` is as in
    :class:`Windower`.

    Returns
    -------
    (X_train float64 (n_train, W·d), X_val float64 (n_val, W·d), spec)

    Raises
    ------
    InputValidationError : labels of the wrong length or not 0/1; too short a series; timestamps
        that repeat or go back under ``time_order`` "strict".
    """
    t, values = table_values(table, spec, name=name)
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if labels.shape[0] != values.shape[0] or not np.isin(labels, (0, 1)).all():
            raise InputValidationError(f"--labels: got {labels.shape[0]} labels; expected one 0/1 label per row of "
                                       f"{name} ({values.shape[0]}).")
        values = np.where(labels[:, None] == 1, np.nan, values)
    step = infer_step(t, name)
    windower = Windower(spec["window"], step, name=name, time_column=spec["time_column"], time_order=time_order)
    windows = windower.add(t, values)
    w = spec["window"]
    usable = windows[windower.positions >= w - 1]           # rows with W − 1 steps before them
    n_val = max(min_val, int(np.ceil(val_fraction * usable.shape[0])))
    n_train = usable.shape[0] - n_val - (w - 1)
    if n_train < 1:
        raise InputValidationError(
            f"{name}: {values.shape[0]} rows give {usable.shape[0]} full windows of {w} steps; expected at least "
            f"{n_val + w} ({n_val} to calibrate on, {w - 1} between the blocks, one to train on). Use a longer "
            "series or a smaller --window.")
    if n_train < w - 1:
        warnings.warn(f"{name}: {usable.shape[0]} full windows of {w} steps leave {n_train} to train on ({n_val} "
                      f"calibrate, {w - 1} between the blocks are dropped); a longer series or a smaller --window "
                      "gives the model more to learn from.")
    out = {**spec, "step_seconds": step / 1e9, "inserted_steps": int(windower.inserted)}
    if windower.out_of_order:
        out["out_of_order_rows"] = windower.out_of_order
    return usable[:n_train], usable[-n_val:], out
