"""Reading an HTTP request's body into what the Scorer takes (the ``POST /score`` of
:mod:`vae_anomaly.integrations.service`): the body read within its byte limit, JSON rows or records,
a CSV table or ``.npy`` bytes, numbers beyond float64 or int64, record keys matched to the model's
column names, a window model's body as a series, and the errors answered as HTTP statuses.

Everything here goes through the deploy path's gates (:func:`vae_anomaly.deploy.tables.column_map`
for names, :func:`vae_anomaly.deploy.schema.category_text` for categories through
:func:`vae_anomaly.deploy.schema.encode`, :func:`vae_anomaly.deploy.series.timestamps_ns` for time),
so a body scores as the same rows in a file do.
"""

from __future__ import annotations

import json
import math

import numpy as np
from fastapi import Request

from ..deploy import schema, series, tables
from ..deploy.io import parse_matrix_bytes
from ..deploy.scorer import Scorer
from ..deploy.series_run import SeriesRun
from ..errors import InputValidationError

_EXACT = 2 ** 53  # integers up to this magnitude are exact in float64 (pyarrow refuses larger ones there)
_INT64 = 2 ** 63


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message, "kind": kind}`` with ``status`` (and ``headers``)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, read from its stream and refused (HTTPError 413) once it is over
    ``max_bytes``: a declared Content-Length over the limit before anything is read, a body without
    one (chunked) as soon as the bytes read pass the limit, so memory stays within the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise HTTPError(413, "too_large", f"request body: {declared} bytes; the limit is {max_bytes} "
                                          "(serve --max-body-mb). Send fewer rows per request.")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise HTTPError(413, "too_large", f"request body: more than {max_bytes} bytes; the limit is {max_bytes} "
                                              "(serve --max-body-mb). Send fewer rows per request.")
        chunks.append(chunk)
    return b"".join(chunks)


def as_float(value) -> float:
    """A number (or its text) as float64; an integer beyond float64's range is ±inf, as ``1e400`` or
    a CSV cell of the same digits reads. TypeError/ValueError for anything else."""
    try:
        return float(value)
    except OverflowError:  # only an int raises it
        return math.inf if value > 0 else -math.inf


def parse_request(kind: str, body: bytes, params: dict, max_rows: int) -> tuple[str, object, dict]:
    """Body -> (form, payload, options): form "rows" with an ndarray (JSON rows, ``.npy``),
    "records" with a list of dicts, or "csv" with the body's bytes (read against the serving
    model by :func:`score_body`). Raises HTTPError 400 for a body that cannot be read (invalid or too
    deeply nested JSON, a number too long to read, malformed rows), 413 for too many rows."""
    options = {k: params[k] for k in ("alpha", "threshold", "score", "features", "time_order") if k in params}
    if kind == "csv":
        return "csv", body, options
    if kind == "json":
        expected = 'expected a JSON object {"rows": [[...], ...]} or {"records": [{"column": value, ...}, ...]}'
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, "malformed", f"request body: not valid JSON ({e}); {expected}.") from None
        except RecursionError:
            raise HTTPError(400, "malformed", f"request body: JSON nested too deeply to read; {expected}, "
                                              "nested three levels at most.") from None
        except ValueError as e:  # an integer over Python's digit limit
            raise HTTPError(400, "malformed", f"request body: a number too long to read "
                                              f"({str(e).split(';')[0]}); expected numbers within float64's "
                                              "range (about ±1.8e308).") from None
        forms = [k for k in ("rows", "records") if isinstance(doc, dict) and isinstance(doc.get(k), list)]
        if len(forms) != 1:
            raise HTTPError(400, "malformed", 'request body: expected a JSON object {"rows": [[...], ...]} or '
                                              '{"records": [{"column": value, ...}, ...]} (one of the two).')
        options.update({k: doc[k] for k in ("alpha", "threshold", "score", "condition", "features", "time_order")
                        if k in doc})
        rows = doc[forms[0]]
        if len(rows) > max_rows:
            raise HTTPError(413, "too_large", f"request body: {len(rows)} rows; the limit is {max_rows}.")
        if forms[0] == "records":
            if not all(isinstance(r, dict) for r in rows):
                raise HTTPError(400, "malformed", "request body: records must be JSON objects {\"column\": value}.")
            return "records", rows, options
        if rows and not all(isinstance(r, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in r) for r in rows):
            raise HTTPError(400, "malformed", "request body: rows must be lists of numbers.")
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise HTTPError(400, "malformed", f"request body: rows have different lengths {sorted(widths)}.")
        try:
            X = np.asarray(rows, dtype=np.float64)
        except OverflowError:  # an integer beyond float64's range: ±inf, refused with the other non-finite values
            X = np.asarray([[as_float(v) for v in r] for r in rows], dtype=np.float64)
        X = X.reshape(len(rows), widths.pop() if widths else 0)
    else:
        try:
            X = parse_matrix_bytes(body, kind, "request body")
        except InputValidationError as e:
            raise HTTPError(400, "malformed", str(e)) from None
    if X.ndim >= 1 and X.shape[0] > max_rows:
        raise HTTPError(413, "too_large", f"request body: {X.shape[0]} rows; the limit is {max_rows}.")
    return "rows", X, options


def named_records(records: list[dict], scorer: Scorer) -> list[dict]:
    """``records`` with each key that names one of the model's columns (compared after Unicode NFC,
    :func:`vae_anomaly.deploy.tables.column_map`) spelled as the model spells it; a positional
    model's records as they are.

    Raises
    ------
    InputValidationError : a column of the model given under two spellings.
    """
    if scorer.series is not None:
        wanted = series.needed_columns(scorer.series)
    elif scorer.table is not None:
        wanted = schema.needed_columns(scorer.table)
    else:
        return records
    keys = list(dict.fromkeys(k for r in records for k in r))
    rename = {a: w for w, a in tables.column_map(keys, wanted, "request records").items() if a != w}
    return [{rename.get(k, k): v for k, v in r.items()} for r in records] if rename else records


def wide_ints(records: list[dict], scorer: Scorer) -> list[dict]:
    """``records`` with the integers pyarrow cannot take as they are rewritten the way a CSV body of
    the same digits is read: in a numeric column (any key of a positional model) an integer beyond
    ±2**53 becomes the nearest float64 (±inf beyond its range, then refused as non-finite); in a
    categorical column or a window model's time column one beyond the 64-bit range becomes its
    digits as text. ID columns are left as sent. Records without such an integer are kept as they are."""
    if scorer.series is not None:
        numeric, text = set(scorer.series["metrics"]), {scorer.series["time_column"]}
    elif scorer.table is not None:
        numeric = {f["name"] for f in scorer.table["features"] if f["kind"] == "numeric"}
        text = {f["name"] for f in scorer.table["features"]} - numeric
    else:
        numeric, text = None, set()

    def wide(value) -> bool:
        return type(value) is int and not -_EXACT <= value <= _EXACT

    def rewritten(key: str, value: int):
        if numeric is None or key in numeric:
            return as_float(value)
        return str(value) if key in text and not -_INT64 <= value < _INT64 else value

    return [{k: rewritten(k, v) if wide(v) else v for k, v in r.items()} if any(map(wide, r.values())) else r
            for r in records]


def _text(value, cache: dict):
    """A record's categorical value as the model's category text: text as given; a number or a
    boolean as pyarrow writes it (3 -> "3", true -> "true"), as for a table's typed columns."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        key = (type(value), value)
        if key not in cache:
            import pyarrow as pa
            import pyarrow.compute as pc

            cache[key] = pc.cast(pa.array([value]), pa.string())[0].as_py()
        return cache[key]
    raise InputValidationError(f"holds a {type(value).__name__}; expected a category (text or a number).")


def _records_table(records: list[dict], spec: dict | None, label: str):
    """JSON records as a pyarrow Table for ``spec`` (the model's table schema; None: a positional
    model, every key a numeric column in the order first seen): its features only, numeric ones
    float64, categorical ones text (ID columns: :func:`_ids`). A column absent from every record
    is left out (the Scorer names it); a key absent from some records is a missing value there.

    Raises
    ------
    InputValidationError : a numeric feature holding text (column and row named), a categorical
        one holding a list or an object.
    """
    import pyarrow as pa

    keys = list(dict.fromkeys(k for r in records for k in r))
    spec = spec or schema.positional(keys)
    present = set(keys)
    columns, cache = {}, {}
    for f in spec["features"]:
        name = f["name"]
        if name not in present and records:
            continue
        values = [r.get(name) for r in records]
        for i, v in enumerate(values):
            try:
                if f["kind"] == "numeric":
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise InputValidationError(f"holds {json.dumps(v)[:40]}; expected a number ({name!r} is a "
                                                   "numeric feature of the model)")
                else:
                    values[i] = _text(v, cache)
            except InputValidationError as e:
                raise InputValidationError(f"{label}: column {name!r}, data row {i}, {str(e).rstrip('.')}.") from None
        columns[name] = pa.array(values, pa.float64() if f["kind"] == "numeric" else pa.string())
    return pa.table(columns)


def _csv_table(body: bytes, spec: dict | None, label: str, types: dict | None = None):
    """A CSV body (header row, ``,``-delimited) as a pyarrow Table; a table model's categorical
    features and ID columns are read as text, as ``vae-anomaly score`` reads a file (a category or
    an ID such as ``007`` is kept as written). ``types`` ({column: pyarrow type}) replaces those.

    Raises
    ------
    InputValidationError : unreadable CSV (400).
    """
    if types is None:
        import pyarrow as pa

        types = {} if spec is None else {c: pa.string() for c in
                                         [f["name"] for f in spec["features"] if f["kind"] != "numeric"]
                                         + list(spec["id_columns"])}
    return tables.read_csv_bytes(body, label, column_types=types)


def json_numbers(values: list) -> list:
    """``values`` with each NaN or ±inf float as None (JSON has no such numbers): a score the graph
    could not compute is null, as in the CLI's JSONL, and the row is flagged with p-value 0
    (:func:`vae_anomaly.deploy.policy.nonfinite_scores`); an ID sent as NaN comes back null."""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


def _ids(table, records: list[dict] | None, spec: dict | None) -> dict | None:
    """{ID column: values} for the model's ID columns the body has (records: values as sent; CSV:
    as text), or None without any."""
    if spec is None or not spec["id_columns"]:
        return None
    if records is not None:
        present = set().union(*records) if records else set()
        out = {c: json_numbers([r.get(c) for r in records]) for c in spec["id_columns"] if c in present}
    else:
        table = tables.select_columns(table, spec["id_columns"], "request body")  # names after NFC
        out = {c: table.column(c).to_pylist() for c in table.column_names}
    return out or None


def top_k(value) -> int:
    """The ``features`` option: how many top features per row (0 = none). HTTPError 400 otherwise."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise HTTPError(400, "malformed", f"features: got {str(value)[:40]!r}; expected an integer >= 0.")


def _series_windows(run: SeriesRun, form: str, payload) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                  dict | None]:
    """A window model's body (a CSV table, or records, of its time column, metrics and ID columns)
    as window rows, one per body row, through ``run`` (:class:`~vae_anomaly.deploy.series_run.SeriesRun`:
    the body is a series of its own, so its first W − 1 rows have padded windows, marked in the
    warm-up mask), their seasons' condition (None without), and its ID columns as sent.

    Raises
    ------
    InputValidationError : a missing time column, an unreadable timestamp, text in a metric,
        timestamps that repeat or go back under ``time_order`` "strict".
    """
    import pyarrow as pa

    spec = run.spec
    if form == "csv":
        table = payload
        ids = _ids(table, None, spec)
    else:
        time = spec["time_column"]
        table = _records_table(payload, schema.positional(spec["metrics"]), run.name)
        if any(time in r for r in payload):
            table = table.append_column(time, pa.array([_text(r.get(time), {}) for r in payload], pa.string()))
        ids = _ids(None, payload, spec)
    windows, warmup, season = run.windows(table)
    return windows, warmup, season, ids


def score_body(scorer: Scorer, form: str, payload, max_rows: int, time_order: str = "strict", **predict):
    """(ScoreResult, ids) of a parsed body (see :func:`parse_request`); run in a worker thread. A
    window model scores a CSV or records body as a series (:func:`_series_windows`).

    Raises
    ------
    HTTPError : 400 an unreadable CSV, 413 too many CSV rows, 422 rows that do not fit the model.
    """
    ids, spec = None, scorer.table
    if form == "csv":
        try:
            X = _csv_table(payload, spec, "request body",
                           types=None if scorer.series is None else series.read_types(scorer.series))
        except InputValidationError as e:
            raise HTTPError(400, "malformed", str(e)) from None
        if X.num_rows > max_rows:
            raise HTTPError(413, "too_large", f"request body: {X.num_rows} rows; the limit is {max_rows}.")
        name = "request body"
    try:
        if form == "csv" and scorer.series is None:
            ids = _ids(X, None, spec)
        if scorer.series is not None and form != "rows":
            name = "request body" if form == "csv" else "request records"
            run = SeriesRun(scorer, name=name, time_order=time_order, score=predict.get("score"),
                            threshold=predict.get("threshold", "auto"), alpha=predict.get("alpha"))
            series.refuse_condition(predict.pop("condition", None), "condition")
            X, warmup, season, ids = _series_windows(run, form, X if form == "csv" else payload)
            return run.decide(scorer.predict(X, name=name, condition=season, **predict), warmup), ids
        if form == "records":
            name = "request records"
            X = _records_table(payload, spec, name) if payload or spec else np.empty((0, scorer.n_features))
            ids = _ids(None, payload, spec)
        elif form == "rows":
            X, name = payload, "request rows"
        return scorer.predict(X, name=name, **predict), ids
    except InputValidationError as e:
        raise HTTPError(422, "invalid_rows", str(e)) from None
