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

* **Seasons** (``fit --seasons auto``; off by default): when the training period spans at least two
  days (two weeks), the time of day (and of week) of each window's last step is the model's
  condition (:func:`season_parts`, :func:`window_condition`): known at scoring, fed to the encoder,
  the decoder and the prior, never scored.

The metadata entry ``series`` records ``window`` (W), ``time_column``, ``step_seconds``,
``metrics`` and ``id_columns`` (the time column first), ``time_unit`` when the time column holds
epoch numbers (:func:`timestamps_ns`, the one parser of the time column at fit and at score), and
``season`` (the seasons of the condition; absent or empty for none).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputValidationError
from .tables import arrow_compute, load_pyarrow, read_table, select_columns, to_numpy

#: ``--window auto``'s longest and shortest window, time steps (benchmarks/README.md, "NAB: metric
#: series" and "Server metrics: SMD and ASD (issue 30)")
AUTO_WINDOW_RANGE = (16, 64)
#: ``--window auto`` keeps a window's values (W · metrics) near this, the default hidden width
AUTO_WINDOW_VALUES = 256
#: how rows whose timestamp repeats or goes back are treated: refused, or taken in file order
TIME_ORDERS = ("strict", "as-read")
_TIME_NAMES = ("timestamp", "time")
#: the seasons a window model can be conditioned on (``fit --seasons auto``): (period in seconds, the
#: training span in days from which it is), benchmarks/README.md, "NAB: metric series", "Seasons"
SEASONS = {"day": (86_400, 2.0), "week": (7 * 86_400, 14.0)}
#: ``fit --seasons``: none (the default), or those the training period spans twice over
SEASON_CHOICES = ("off", "auto")
_MONDAY_OFFSET_S = 3 * 86_400  # 1970-01-01, day 0 of epoch time, was a Thursday: weeks start on Monday 00:00


def auto_window(n_metrics: int) -> int:
    """``--window auto``: W for a series of ``n_metrics`` metrics, time steps (int).

    The largest power of two with W · n_metrics <= :data:`AUTO_WINDOW_VALUES`, within
    :data:`AUTO_WINDOW_RANGE`: 64 steps for 1 to 4 metrics, 32 for 5 to 8, 16 for 9 or more. The
    ends were measured: 64 had the best mean average precision among 16, 32, 64 and 128 on NAB's 29
    one-metric series; 16 beat 64 (and 8) on the ASD servers' 19 metrics, and with it the SMD
    machines' 38 rank above KNN on one machine of two (benchmarks/README.md, "Server metrics: SMD
    and ASD (issue 30)"); 32 between them is not measured.
    """
    lo, hi = AUTO_WINDOW_RANGE
    fit = 1 << max(0, (AUTO_WINDOW_VALUES // max(1, int(n_metrics))).bit_length() - 1)
    return int(min(hi, max(lo, fit)))


def season_parts(t: np.ndarray, seasons: str = "auto") -> list[str]:
    """The seasons (keys of :data:`SEASONS`) of ``fit --seasons``: none for "off"; for "auto" those
    that a training period with timestamps ``t`` (int64 ns, in order) spans at least twice over: the
    day from 2 days, the week from 14.

    Raises
    ------
    InputValidationError : ``seasons`` not one of :data:`SEASON_CHOICES`.
    """
    if seasons not in SEASON_CHOICES:
        raise InputValidationError(f"--seasons: got {seasons!r}; expected one of {', '.join(SEASON_CHOICES)}.")
    span_days = (int(t[-1]) - int(t[0])) / 86_400e9 if t.size else 0.0
    return [part for part, (_, days) in SEASONS.items() if seasons == "auto" and span_days >= days]


def window_condition(spec: dict, t: np.ndarray) -> np.ndarray | None:
    """A window model's condition for the windows ending at ``t`` (int64 ns): sin and cos of the
    phase of each season in ``spec["season"]`` (the time of day, Monday-based time of week, of the
    timestamps as read: a naive time column's clock, UTC for one with a time zone), float32
    (n, 2 per season); None for a model without seasons. The one computation of the condition at
    fit, calibrate, report and score (CLI, Python, HTTP, Dask)."""
    parts = spec.get("season") or []
    if not parts:
        return None
    cols = []
    for part in parts:
        period_s = SEASONS[part][0]
        offset_ns = _MONDAY_OFFSET_S * 10**9 if part == "week" else 0
        phase = np.mod(t.astype(np.int64) + offset_ns, period_s * 10**9) / (period_s * 1e9)  # exact in int64, then [0, 1)
        cols += [np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)]
    return np.column_stack(cols).astype(np.float32)


def refuse_condition(given, name: str) -> None:
    """A window model takes no condition from its caller (its seasons' condition comes from the time
    column, :func:`window_condition`).

    Raises
    ------
    InputValidationError : ``given`` is not None.
    """
    if given is not None:
        raise InputValidationError(f"{name}: a window model takes no condition; one fitted with --seasons computes "
                                   "the time of day and week from the time column. Score without a condition.")


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


#: a window model's step, seconds: from 1 ms to about 31 years (windows over a finer step, or gaps
#: measured in such steps, would ask for memory in proportion); fit refuses others, loading too
STEP_SECONDS_RANGE = (1e-3, 1e9)
#: epoch units of a time column of numbers (``--time-unit``), in nanoseconds
TIME_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_NS_LIMIT = 9.2e18  # just inside int64 nanoseconds (2^63 ≈ 9.22e18)


def timestamps_ns(column, name: str, time_column: str, first_row: int = 0, unit: str | None = None) -> np.ndarray:
    """The one parser of a series' time column, at fit and at score: int64 nanoseconds since the
    epoch, UTC.

    * timestamps and dates (typed, or text such as ``2026-01-01 00:05:00``): as written, read as UTC;
    * text with a zone (``2026-01-01T00:05:00Z``, ``...+01:00``) and zoned timestamps: the UTC instant;
    * numbers (epoch time, typed or as text): only with ``unit`` (one of :data:`TIME_UNITS`; the
      model records it), since seconds read as nanoseconds would put a day in 86 microseconds.

    Raises
    ------
    InputValidationError : a missing or unreadable timestamp (its row named); numbers without a
        unit; epoch numbers outside the int64 nanosecond range (years 1677 to 2262).
    """
    pa, pc = load_pyarrow(), arrow_compute()
    if column.null_count:
        r = int(np.argmax(to_numpy(column.is_null(), bool)))
        raise InputValidationError(f"{name}: column {time_column!r}, data row {first_row + r}, is empty; "
                                   "expected a timestamp on every row.")
    if len(column) == 0:
        return np.empty(0, np.int64)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_trim_whitespace(column)
    t = column.type
    numbers = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or (
        (pa.types.is_string(t) or pa.types.is_large_string(t))
        and pc.all(pc.match_substring_regex(column, r"^[+-]?\d+(\.\d*)?([eE][+-]?\d+)?$")).as_py())
    if numbers:
        return _epoch_ns(column, name, time_column, first_row, unit)
    if unit is not None:
        raise InputValidationError(f"{name}: column {time_column!r} holds {t} that is not all epoch numbers; expected "
                                   f"epoch numbers in {unit!r}, as the time unit says (at fit: drop --time-unit for "
                                   "dates and times).")
    if pa.types.is_timestamp(t) and t.tz is not None:
        column = column.cast(pa.timestamp(t.unit))  # the UTC instants, zone dropped
    for target in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):  # text as written, then with a zone
        try:
            ts = pc.cast(column, target)
            break
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            error = e
    else:
        raise InputValidationError(f"{name}: column {time_column!r} does not hold timestamps ({str(error)[:100]}); "
                                   "expected e.g. 2026-01-01 00:05:00, one form (with or without a zone) on every "
                                   "row.") from None
    return to_numpy(ts.cast(pa.int64()), np.int64)


def _epoch_ns(column, name: str, time_column: str, first_row: int, unit: str | None) -> np.ndarray:
    """Epoch numbers in ``unit`` as int64 nanoseconds (:func:`timestamps_ns`)."""
    pa = load_pyarrow()
    if unit is None:
        raise InputValidationError(f"{name}: column {time_column!r} holds numbers; if they are epoch time, "
                                   "expected their unit: fit with --time-unit s (or ms, us, ns), and score with "
                                   "that model.")
    if unit not in TIME_UNITS:
        raise InputValidationError(f"--time-unit: got {unit!r}; expected one of {', '.join(TIME_UNITS)}.")
    scale = TIME_UNITS[unit]
    values = to_numpy(arrow_compute().cast(column, pa.float64()), np.float64)
    bad = ~(np.abs(values) * scale < _NS_LIMIT)
    if bad.any():
        r = int(np.argmax(bad))
        raise InputValidationError(f"{name}: column {time_column!r}, data row {first_row + r}, holds {values[r]:g} "
                                   f"{unit} since the epoch; expected a time between the years 1677 and 2262.")
    try:  # integers (typed or text) exactly; fractions rounded to the nanosecond
        return to_numpy(arrow_compute().cast(column, pa.int64()), np.int64) * np.int64(scale)
    except pa.ArrowInvalid:
        return np.rint(values * scale).astype(np.int64)


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
    return full, np.flatnonzero(full[1:] <= full[:-1])  # compared, not subtracted: no int64 wrap


def differences(t: np.ndarray, name: str, previous: int | None = None, first_row: int = 0) -> np.ndarray:
    """Consecutive differences of int64 nanosecond timestamps (with ``previous``, the row before
    ``first_row``, in front when given), int64 (n − 1,) or (n,).

    Raises
    ------
    InputValidationError : two timestamps more than 292 years apart (the difference would wrap
        int64), the later row named.
    """
    full = t if previous is None else np.concatenate([[previous], t])
    with np.errstate(over="ignore"):
        diffs = np.diff(full)
    wrapped = np.flatnonzero((diffs < 0) != (full[1:] < full[:-1]))
    if wrapped.size:
        r = first_row + int(wrapped[0]) + (1 if previous is None else 0)
        raise InputValidationError(f"{name}: data row {r} lies more than 292 years from the row before it; expected "
                                   "a series of one period. Check its time column for a mistyped year.")
    return diffs


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
    InputValidationError : fewer than two distinct timestamps; timestamps more than 292 years apart.
    """
    diffs = differences(t, name)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise InputValidationError(f"{name}: {np.unique(t).size} distinct timestamps; expected at least 2 to learn "
                                   "the series' step.")
    return int(np.median(diffs))


def series_spec(arrow_schema, *, window: int | str, time_column: str | None = None, exclude=None, id_columns=None,
                time_unit: str | None = None, name: str = "X") -> dict:
    """The ``series`` metadata entry (without ``step_seconds``) for a table's columns: the time column,
    the metrics (every other numeric column that is not excluded or an ID) and the ID columns, and
    ``time_unit`` (one of :data:`TIME_UNITS`) for a time column of epoch numbers. ``window`` is W,
    or ``"auto"`` for :func:`auto_window` of the metrics found.

    Raises
    ------
    InputValidationError : W < 2, no time column, a named column the table lacks, a time or ID
        column named as a score output column, a non-numeric column left as a metric, no metric.
    """
    from .schema import check_output_names, column_names

    pa = load_pyarrow()
    if window != "auto" and int(window) < 2:
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
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise InputValidationError(f"--time-unit: got {time_unit!r}; expected one of {', '.join(TIME_UNITS)}.")
    window = auto_window(len(metrics)) if window == "auto" else int(window)
    return {"window": window, "time_column": time, "step_seconds": None, "metrics": metrics,
            "id_columns": [time, *ids], "exclude": exclude, **({"time_unit": time_unit} if time_unit else {})}


def table_values(table, spec: dict, *, name: str = "X", first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps int64 ns (n,), metric values float64 (n, d), NaN where missing) of a table chunk.

    Raises
    ------
    InputValidationError : a missing column, an unreadable timestamp, text in a metric (named).
    """
    from .schema import encode, positional

    time = spec["time_column"]
    table = select_columns(table, [time, *spec["metrics"]], name)  # names after NFC; a repeated one refused
    if time not in table.column_names:
        raise InputValidationError(f"{name}: no time column {time!r}; the model was fitted on a series with it.")
    t = timestamps_ns(table.column(time), name, time, first_row, spec.get("time_unit"))
    values = encode(table, positional(spec["metrics"]), name=name, first_row=first_row, allow_missing=True)
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise InputValidationError(f"{name}: column {spec['metrics'][c]!r}, data row {first_row + int(r)}, holds "
                                   f"{values[r, c]}; expected a finite value or an empty cell.")
    return t, values


def needed_columns(spec: dict) -> list[str]:
    """The columns read to score a series: the ID columns (the time column first), then the metrics."""
    return [*spec["id_columns"], *spec["metrics"]]


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
    model_step : ``step`` is a fitted model's: warn when the scored series' first chunk steps by
        another (its median difference more than 1% away), since its windows then span other times.

    A gap of more than W − 1 missing steps is inserted as W − 1 of them: every window after it is
    the same as with the whole gap, so a mistyped year costs W steps of memory, not millions
    (``inserted`` still counts every missing step).

    The state (the last W − 1 steps, the last timestamp) carries over from one :meth:`add` to the
    next, so the windows do not depend on how the series is chunked; :meth:`state` and
    :meth:`restore` carry it from one run to the next (``score --state``,
    :mod:`vae_anomaly.deploy.series_run`). After each :meth:`add`, ``warmup`` marks the rows with
    fewer than W − 1 steps of the series before them (scored on a window padded at the front).
    """

    def __init__(self, window: int, step: int, *, name: str = "X", time_column: str = "timestamp",
                 time_order: str = "strict", model_step: bool = False):
        check_time_order(time_order)
        self.window, self.step, self.name, self.time_column = int(window), int(step), name, time_column
        self.time_order, self.model_step = time_order, model_step
        self.out_of_order = 0
        self.positions = np.empty(0, np.int64)  # the step index of each row of the last chunk
        self.warmup = np.empty(0, bool)  # rows of the last chunk with fewer than W − 1 steps before them
        self.last_t: int | None = None
        self.last_pos = -1
        self.tail: np.ndarray | None = None  # (W − 1, d): the steps before the next chunk
        self.rows = 0
        self.inserted = 0

    @classmethod
    def for_model(cls, spec: dict, *, name: str = "X", time_order: str = "strict") -> Windower:
        """The Windower of a window model's ``series`` metadata (its W, step and time column)."""
        return cls(spec["window"], int(round(spec["step_seconds"] * 1e9)), name=name,
                   time_column=spec["time_column"], time_order=time_order, model_step=True)

    def _warn_if_other_step(self, diffs: np.ndarray) -> None:
        positive = diffs[diffs > 0]
        if positive.size and abs(float(np.median(positive)) / self.step - 1.0) > 0.01:
            warnings.warn(f"{self.name}: the series steps by {float(np.median(positive)) / 1e9:g} s (the median time "
                          f"between rows); the model was fitted on steps of {self.step / 1e9:g} s, so its windows "
                          "would span other times. Resample the series to the model's step, or fit a model on "
                          "this one.", stacklevel=3)

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
            self.positions, self.warmup = np.empty(0, np.int64), np.empty(0, bool)
            return np.empty((0, w * d))
        diffs = differences(t, self.name, self.last_t, self.rows)
        if self.model_step and self.last_t is None and n > 1:
            self._warn_if_other_step(diffs)
        raw = np.maximum(1.0, np.rint(diffs / self.step))      # steps from each row to the next, float64
        self.inserted += int(np.sum(raw - 1))                   # the missing steps, counted in full
        steps = np.minimum(raw, w)                              # ... inserted W − 1 at most (a longer gap leaves every later window as a gap of W − 1 does)
        if self.last_t is None:
            steps = np.concatenate([[1.0], steps])              # the series' first row is its first step
        pos = self.last_pos + np.cumsum(steps.astype(np.int64))
        self.positions, self.warmup = pos, pos < w - 1
        span = int(pos[-1] - self.last_pos)                   # steps from the last known one to this chunk's end
        full = np.full((w - 1 + span, d), np.nan)
        full[: w - 1] = self.tail
        full[w - 1 + (pos - self.last_pos - 1)] = values
        windows = np.lib.stride_tricks.sliding_window_view(full, (w, d))[:, 0]  # (span, w, d)
        out = windows[pos - self.last_pos - 1].reshape(n, w * d)
        self.tail = full[len(full) - (w - 1):] if w > 1 else full[:0]
        self.last_pos, self.last_t, self.rows = int(pos[-1]), int(t[-1]), self.rows + n
        return out

    def state(self) -> dict:
        """What the next run needs to continue the series (plain JSON values): the last timestamp
        (int ns, None before any row), how many steps are known (at most W − 1 counted) and the last
        W − 1 steps (lists of floats, None for a missing value)."""
        w = self.window
        tail = [] if self.tail is None else [[None if np.isnan(v) else float(v) for v in step] for step in self.tail]
        return {"last_t": self.last_t, "steps_known": min(self.last_pos + 1, w - 1), "tail": tail}

    def restore(self, state: dict, n_metrics: int) -> None:
        """Continue from :meth:`state` of an earlier run (rows, gaps and out-of-order counts start at 0).

        Raises
        ------
        ValueError : a state that does not fit W − 1 steps of ``n_metrics`` metrics.
        """
        w = self.window
        tail = np.array([[np.nan if v is None else float(v) for v in step] for step in state["tail"]],
                        dtype=np.float64).reshape(-1, n_metrics) if state["tail"] else np.full((w - 1, n_metrics), np.nan)
        known = int(state["steps_known"])
        if tail.shape != (w - 1, n_metrics) or not 0 <= known <= w - 1 or (state["last_t"] is None) != (known == 0):
            raise ValueError(f"expected the last {w - 1} steps of {n_metrics} metrics")
        self.tail, self.last_pos = tail, known - 1
        self.last_t = None if state["last_t"] is None else int(state["last_t"])


def table_windows(table, spec: dict, *, name: str = "X", labels: np.ndarray | None = None,
                  time_order: str = "strict") -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A whole series table's full windows for a window model (``calibrate``): the rows with W − 1
    steps before them, float64 (n, W·d), their labels (None without) and their condition
    (:func:`window_condition`, None for a model without seasons), matched by the model's column
    names and read with the model's time parser.

    Raises
    ------
    InputValidationError : as :func:`table_values` and :meth:`Windower.add`; labels that are not one
        per row; no full window.
    """
    t, values = table_values(table, spec, name=name)
    if labels is not None and np.asarray(labels).ravel().shape[0] != values.shape[0]:
        raise InputValidationError(f"--labels: got {np.asarray(labels).size} labels; expected one per row of "
                                   f"{name} ({values.shape[0]}).")
    windower = Windower.for_model(spec, name=name, time_order=time_order)
    windows = windower.add(t, values)
    full = windower.positions >= spec["window"] - 1
    if not full.any():
        raise InputValidationError(f"{name}: {values.shape[0]} rows hold no full window of {spec['window']} steps; "
                                   "expected a longer series.")
    condition = window_condition(spec, t[full])
    return windows[full], None if labels is None else np.asarray(labels).ravel()[full], condition


def read_windows(path, spec: dict, *, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None,
                                                                                 np.ndarray | None]:
    """A whole series file (.csv or .parquet) read as ``score`` reads it for a window model (its
    columns by name, metrics float64, the time column through :func:`timestamps_ns`): its full
    windows, their labels and their condition, as :func:`table_windows` gives them (``calibrate``,
    ``report``)."""
    table = read_table(path, column_types=read_types(spec), columns=needed_columns(spec))
    return table_windows(table, spec, name=str(path), labels=labels)


def fit_windows(table, spec: dict, *, val_fraction: float, labels: np.ndarray | None = None, name: str = "X",
                min_val: int = 5, time_order: str = "strict", seasons: str = "off") -> tuple:
    """Training and calibration windows of a series, its spec with the step and the seasons filled
    in, and the windows' conditions.

    Known anomalous points (``labels`` == 1, one label per row) become missing values, so they are
    left out of the likelihood (Donut's modified ELBO). Windows start at the W-th time step (every
    training window has W − 1 steps of context). The calibration windows are the last
    ``val_fraction`` of them, a block at the end of the training period: windows of one series are
    not exchangeable, so a random split would calibrate on windows interleaved with (and
    overlapping) the training windows. W − 1 windows between the two blocks are dropped, so that no
    calibration window shares a time step with a training window. ``time_order`` is as in
    :class:`Windower`.

    The seasons (``spec["season"]``) are :func:`season_parts` of the series' timestamps under
    ``seasons`` ("off" or "auto"); the conditions are their :func:`window_condition` at each
    window's last step (None without seasons).

    Returns
    -------
    (X_train float64 (n_train, W·d), X_val float64 (n_val, W·d), spec, C_train float32
    (n_train, m) or None, C_val float32 (n_val, m) or None)

    Raises
    ------
    InputValidationError : labels of the wrong length or not 0/1; too short a series; timestamps
        that repeat or go back under ``time_order`` "strict".
    """
    w = spec["window"]
    if table.num_rows < min_val + w:  # before anything of W steps is allocated
        raise InputValidationError(
            f"{name}: {table.num_rows} rows; a window of {w} steps needs at least {min_val + w} ({min_val} full "
            f"windows to calibrate on, {w - 1} steps between the blocks, one to train on). Use a longer series or "
            "a smaller --window.")
    t, values = table_values(table, spec, name=name)
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if labels.shape[0] != values.shape[0] or not np.isin(labels, (0, 1)).all():
            raise InputValidationError(f"--labels: got {labels.shape[0]} labels; expected one 0/1 label per row of "
                                       f"{name} ({values.shape[0]}).")
        values = np.where(labels[:, None] == 1, np.nan, values)
    step = infer_step(t, name)
    low, high = STEP_SECONDS_RANGE
    if not low <= step / 1e9 <= high:
        raise InputValidationError(f"{name}: the series steps by {step / 1e9:g} s (the median time between rows); "
                                   f"expected a step from {low:g} to {high:g} s. Check the time column "
                                   "(and --time-unit), or resample the series.")
    windower = Windower(spec["window"], step, name=name, time_column=spec["time_column"], time_order=time_order)
    windows = windower.add(t, values)
    full = windower.positions >= w - 1                      # rows with W − 1 steps before them
    usable = windows[full]
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
    out = {**spec, "step_seconds": step / 1e9, "inserted_steps": int(windower.inserted),
           "season": season_parts(t, seasons)}
    if windower.out_of_order:
        out["out_of_order_rows"] = windower.out_of_order
    c = window_condition(out, t[full])
    return (usable[:n_train], usable[-n_val:], out, None if c is None else c[:n_train],
            None if c is None else c[-n_val:])
