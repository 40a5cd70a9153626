"""The HTTP scoring service behind ``vae-anomaly serve`` (FastAPI + uvicorn, extra ``[serve]``).

Every request scores through the same :class:`~vae_anomaly.deploy.scorer.Scorer` as the CLI, so a row
gets the same score, p-value and flag over HTTP as from ``vae-anomaly score``.

Endpoints: ``POST /score`` (JSON ``{"rows": [[...], ...]}`` or ``{"records": [{column: value},
...]}``, or a CSV body with a header row as ``text/csv``, or ``.npy`` bytes as
``application/x-npy``), ``POST /reload``, ``GET /healthz``, ``GET /readyz``, ``GET /model``,
``GET /metrics`` (Prometheus text format), and the framework's ``/openapi.json``.

Records and CSV columns are matched to a model fitted on a table by name (in any order; other
columns ignored); the answer carries the model's ID columns the body has (``"ids"``) and, on
request, each row's most anomalous features by name (``"top_features"``). A window model (a metric
series) scores records or a CSV body as a series of its own: one score per row, the window ending
at its timestamp (:mod:`vae_anomaly.deploy.series`).

Status codes: 400 malformed body, 413 body or row count over the limit, 415 unknown content type,
422 rows that do not fit the model: wrong width, non-finite or missing values, a missing column,
text in a numeric column (the CLI's wording), 409 a reload refused.

Hot reload: before each request the model file's (inode, size, mtime) is compared with the loaded
one; ``fit`` replaces the file atomically, so a changed file is complete and is loaded in full. A
file that fails to load is refused and the previous model keeps serving.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from ..deploy import schema, series, tables
from ..deploy.io import parse_matrix_bytes
from ..deploy.monitoring import top_features
from ..deploy.scorer import Scorer
from ..errors import InputValidationError, ModelArtifactError, VaeAnomalyError

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_CONTENT_KINDS = {"application/json": "json", "text/csv": "csv", "application/x-npy": "npy",
                  "application/octet-stream": "npy"}


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message, "kind": kind}`` with ``status``."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


def _load(path: Path) -> Scorer:
    """The Scorer of ``path``; any failure to load (a damaged file, a failed checksum, a file that
    vanished or cannot be read while it is replaced) is a ModelArtifactError with one line."""
    try:
        return Scorer(path)
    except VaeAnomalyError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelArtifactError(f"{path}: cannot load the model ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else ''}).") from None


class ModelHolder:
    """The serving model; reloads when the file on disk changes, keeps the old one if the new fails."""

    def __init__(self, path: str | os.PathLike, on_reload_error):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._on_reload_error = on_reload_error
        self.scorer = _load(self.path)
        self._signature = self._stat()
        self.last_error: str | None = None

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self, force: bool = False) -> Scorer:
        """Load the file again if it changed (or if ``force``); raise VaeAnomalyError if it fails."""
        with self._lock:
            signature = self._stat()
            if force or signature != self._signature:
                self._signature = signature  # a broken file is tried once, not on every request
                try:
                    self.scorer = _load(self.path)
                    self.last_error = None
                except VaeAnomalyError as e:
                    self.last_error = str(e)
                    self._on_reload_error()
                    raise
            return self.scorer

    def current(self) -> Scorer:
        """The model for this request: a changed file is loaded; a broken one is skipped."""
        try:
            return self.reload()
        except VaeAnomalyError:
            return self.scorer


def _parse_request(kind: str, body: bytes, params: dict, max_rows: int) -> tuple[str, object, dict]:
    """Body -> (form, payload, options): form "rows" with an ndarray (JSON rows, ``.npy``),
    "records" with a list of dicts, or "csv" with the body's bytes (read against the serving
    model by :func:`_score`). Raises HTTPError 400 for a malformed body, 413 for too many rows."""
    options = {k: params[k] for k in ("alpha", "threshold", "score", "features", "time_order") if k in params}
    if kind == "csv":
        return "csv", body, options
    if kind == "json":
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, "malformed", f"request body: not valid JSON ({e}).") from None
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
        X = np.asarray(rows, dtype=np.float64).reshape(len(rows), widths.pop() if widths else 0)
    else:
        try:
            X = parse_matrix_bytes(body, kind, "request body")
        except InputValidationError as e:
            raise HTTPError(400, "malformed", str(e)) from None
    if X.ndim >= 1 and X.shape[0] > max_rows:
        raise HTTPError(413, "too_large", f"request body: {X.shape[0]} rows; the limit is {max_rows}.")
    return "rows", X, options


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


def _ids(table, records: list[dict] | None, spec: dict | None) -> dict | None:
    """{ID column: values} for the model's ID columns the body has (records: values as sent; CSV:
    as text), or None without any."""
    if spec is None or not spec["id_columns"]:
        return None
    if records is not None:
        present = set().union(*records) if records else set()
        out = {c: [r.get(c) for r in records] for c in spec["id_columns"] if c in present}
    else:
        out = {c: table.column(c).to_pylist() for c in spec["id_columns"] if c in table.column_names}
    return out or None


def _top_k(value) -> int:
    """The ``features`` option: how many top features per row (0 = none). HTTPError 400 otherwise."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise HTTPError(400, "malformed", f"features: got {str(value)[:40]!r}; expected an integer >= 0.")


def _series_windows(scorer: Scorer, form: str, payload, time_order: str) -> tuple[np.ndarray, dict | None]:
    """A window model's body (a CSV table, or records, of its time column, metrics and ID columns)
    as window rows, one per body row (:class:`~vae_anomaly.deploy.series.Windower`: the body is a
    series of its own, so its first W − 1 rows have padded windows), and its ID columns as sent.

    Raises
    ------
    InputValidationError : a missing time column, an unreadable timestamp, text in a metric,
        timestamps that repeat or go back under ``time_order`` "strict".
    """
    import pyarrow as pa

    spec = scorer.series
    if form == "csv":
        table, name = payload, "request body"
        ids = _ids(table, None, spec)
    else:
        name, time = "request records", spec["time_column"]
        table = _records_table(payload, schema.positional(spec["metrics"]), name)
        if any(time in r for r in payload):
            table = table.append_column(time, pa.array([_text(r.get(time), {}) for r in payload], pa.string()))
        ids = _ids(None, payload, spec)
    t, values = series.table_values(table, spec, name=name)
    windower = series.Windower.for_model(spec, name=name, time_order=time_order)
    return windower.add(t, values), ids


def _score(scorer: Scorer, form: str, payload, max_rows: int, time_order: str = "strict", **predict):
    """(ScoreResult, ids) of a parsed body (see :func:`_parse_request`); run in a worker thread. A
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
        ids, name = _ids(X, None, spec), "request body"
    try:
        if scorer.series is not None and form != "rows":
            X, ids = _series_windows(scorer, form, X if form == "csv" else payload, time_order)
            return scorer.predict(X, name="request body" if form == "csv" else "request records", **predict), ids
        if form == "records":
            name = "request records"
            X = _records_table(payload, spec, name) if payload or spec else np.empty((0, scorer.n_features))
            ids = _ids(None, payload, spec)
        elif form == "rows":
            X, name = payload, "request rows"
        return scorer.predict(X, name=name, **predict), ids
    except InputValidationError as e:
        raise HTTPError(422, "invalid_rows", str(e)) from None


def create_app(model_path: str | os.PathLike, *, max_rows: int = DEFAULT_MAX_ROWS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> FastAPI:
    """The ASGI app serving ``model_path``.

    Raises
    ------
    ModelArtifactError : the model cannot be loaded at start.
    """
    registry = CollectorRegistry()
    requests = Counter("vae_anomaly_requests", "HTTP requests by endpoint and status.",
                       ["endpoint", "status"], registry=registry)
    rows_scored = Counter("vae_anomaly_rows_scored", "Rows scored.", registry=registry)
    flagged = Counter("vae_anomaly_anomalies_flagged", "Rows flagged as anomalous.", registry=registry)
    errors = Counter("vae_anomaly_errors", "Errors by kind.", ["kind"], registry=registry)
    latency = Histogram("vae_anomaly_request_latency_seconds", "Request latency by endpoint.", ["endpoint"],
                        registry=registry, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    reloads = Counter("vae_anomaly_model_reloads", "Model reloads attempted, by outcome.", ["outcome"],
                      registry=registry)
    holder = ModelHolder(model_path, on_reload_error=lambda: reloads.labels("refused").inc())

    app = FastAPI(title="vae-anomaly", version=holder.scorer.metadata["library_version"],
                  description="VAE anomaly scores, conformal p-values and flags from one ONNX model.")

    def answer(endpoint: str, status: int, payload: dict, started: float) -> JSONResponse:
        requests.labels(endpoint, str(status)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - started)
        return JSONResponse(payload, status_code=status)

    def fail(endpoint: str, e: HTTPError, started: float) -> JSONResponse:
        errors.labels(e.kind).inc()
        return answer(endpoint, e.status, {"error": str(e), "kind": e.kind}, started)

    @app.post("/score", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "properties": {
            "rows": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                     "description": "rows of numbers, by position (give rows or records)"},
            "records": {"type": "array", "items": {"type": "object"},
                        "description": "one {column: value} object per row, matched by name"},
            "features": {"type": "integer", "minimum": 0,
                         "description": "also answer each row's this many most anomalous features"},
            "alpha": {"type": "number"}, "threshold": {"oneOf": [{"type": "string", "enum": ["auto"]}, {"type": "number"}]},
            "score": {"type": "string", "enum": ["neg-elbo", "recon-prob", "iwae"]},
            "condition": {"type": "array", "description": "a conditional model's condition per row: "
                                                          "category ids, one-hot rows or numeric context rows"}}}},
        "text/csv": {"schema": {"type": "string"}},
        "application/x-npy": {"schema": {"type": "string", "format": "binary"}}}}})
    async def score(request: Request) -> JSONResponse:
        """Score rows: higher score = more anomalous; p_values are conformal; is_anomaly at the threshold;
        ``ids``: the model's ID columns the body has; ``top_features`` with ``features`` > 0."""
        started = time.perf_counter()
        try:
            kind = _CONTENT_KINDS.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
            if kind is None:
                raise HTTPError(415, "unsupported_media_type",
                                f"content type {request.headers.get('content-type')!r}: expected one of "
                                f"{', '.join(_CONTENT_KINDS)}.")
            declared = int(request.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise HTTPError(413, "too_large", f"request body: {declared} bytes; the limit is {max_bytes}.")
            body = await request.body()
            if len(body) > max_bytes:
                raise HTTPError(413, "too_large", f"request body: {len(body)} bytes; the limit is {max_bytes}.")
            form, payload, options = _parse_request(kind, body, dict(request.query_params), max_rows)
            scorer = holder.current()
            try:
                threshold = options.get("threshold", "auto")
                threshold = threshold if threshold == "auto" else float(threshold)
                alpha = None if options.get("alpha") is None else float(options["alpha"])
            except (TypeError, ValueError):
                raise HTTPError(400, "malformed", "threshold: expected 'auto' or a number; alpha: a number.") from None
            k = _top_k(options.get("features"))
            time_order = options.get("time_order", "strict")
            if time_order not in series.TIME_ORDERS:
                raise HTTPError(400, "malformed", f"time_order: got {time_order!r}; expected one of "
                                                  f"{', '.join(series.TIME_ORDERS)}.")
            result, ids = await run_in_threadpool(_score, scorer, form, payload, max_rows, time_order,
                                                  score=options.get("score"),
                                                  threshold=threshold, alpha=alpha,
                                                  condition=options.get("condition"), feature_terms=k > 0)
        except HTTPError as e:
            return fail("/score", e, started)
        rows_scored.inc(len(result.scores))
        flagged.inc(int(result.is_anomaly.sum()))
        answer_body = {
            "scores": result.scores.tolist(), "p_values": result.p_values.tolist(),
            "is_anomaly": result.is_anomaly.tolist(), "model_id": scorer.model_id, "score": result.score_name,
            "threshold": result.threshold if np.isfinite(result.threshold) else None, "alpha": result.alpha,
        }
        if ids is not None:
            answer_body["ids"] = ids
        if k > 0:
            top = top_features(result.feature_terms, k)
            names = scorer.feature_names
            answer_body["top_features"] = [[names[j] for j in row] for row in top.tolist()] if names else top.tolist()
        return answer("/score", 200, answer_body, started)

    @app.post("/reload")
    def reload() -> JSONResponse:
        """Load the model file again now; a file that fails to load is refused (409), the old model stays."""
        started = time.perf_counter()
        try:
            scorer = holder.reload(force=True)
        except VaeAnomalyError as e:
            return fail("/reload", HTTPError(409, "reload_refused", str(e)), started)
        reloads.labels("loaded").inc()
        return answer("/reload", 200, {"model_id": scorer.model_id}, started)

    @app.get("/healthz")
    def healthz() -> dict:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict:
        """A model is loaded and serving."""
        scorer = holder.current()
        return {"status": "ready", "model_id": scorer.model_id, "last_reload_error": holder.last_error}

    @app.get("/model")
    def model() -> dict:
        """The serving model's metadata (as ``vae-anomaly info``) and its id."""
        scorer = holder.current()
        return {"model_id": scorer.model_id, "path": str(holder.path), "metadata": scorer.metadata}

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format: requests, rows scored, anomalies flagged, latency, errors, reloads."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: settings come from VAE_ANOMALY_* environment variables."""
    return create_app(os.environ["VAE_ANOMALY_MODEL"],
                      max_rows=int(os.environ.get("VAE_ANOMALY_MAX_ROWS", DEFAULT_MAX_ROWS)),
                      max_bytes=int(os.environ.get("VAE_ANOMALY_MAX_BYTES", DEFAULT_MAX_BYTES)))


def serve(model_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Run the service with uvicorn until interrupted: the library call behind ``vae-anomaly serve``.

    The model is loaded once here first, so a bad model is refused (ModelArtifactError) before the
    port is bound; each of the ``workers`` processes then builds its app from the environment.
    """
    import uvicorn

    Scorer(model_path)
    os.environ.update(VAE_ANOMALY_MODEL=str(Path(model_path).resolve()), VAE_ANOMALY_MAX_ROWS=str(max_rows),
                      VAE_ANOMALY_MAX_BYTES=str(max_bytes))
    uvicorn.run("vae_anomaly.integrations.service:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="warning")
