"""The HTTP scoring service behind ``vae-anomaly serve`` (FastAPI + uvicorn, extra ``[serve]``).

Every request scores through the same :class:`~vae_anomaly.deploy.scorer.Scorer` as the CLI, so a row
gets the same score, p-value and flag over HTTP as from ``vae-anomaly score``.

Endpoints: ``POST /score`` (JSON ``{"rows": [[...], ...]}`` or ``{"records": [{column: value},
...]}``, or a CSV body with a header row as ``text/csv``, or ``.npy`` bytes as
``application/x-npy``), ``POST /reload``, ``GET /healthz``, ``GET /readyz``, ``GET /model``,
``GET /metrics`` (Prometheus text format), and the framework's ``/openapi.json``.

Records and CSV columns are matched to a model fitted on a table by name (in any order; other
columns ignored); the answer carries the model's ID columns the body has (``"ids"``) and, on
request, each row's most anomalous features by name (``"top_features"``; a window model's metrics
with their shares of the score, ``"top_metrics"``). A window model (a metric
series) scores records or a CSV body as a series of its own: one score per row, the window ending
at its timestamp (:mod:`vae_anomaly.deploy.series`).

A bearer token (``create_app(token=...)``; ``vae-anomaly serve --token-file`` or the
``VAE_ANOMALY_TOKEN`` environment variable) guards every route but ``/healthz`` (and the schema at
``/docs``, ``/openapi.json``): a request without it gets 401. ``serve`` refuses to bind beyond
loopback without a token unless told ``no_token``. ``GET /model`` answers what a client needs (input
columns and their kinds, scores, alpha, thresholds, version, model id); ``?detail=true`` adds the
file's path and the full metadata.

Status codes: 400 malformed body (any body that cannot be read: invalid or too deeply nested JSON,
an over-long number), 401 no or a wrong token, 413 body or row count over the limit (the body is
refused while it is read, as soon as it passes the limit), 415 unknown content type, 422 rows that
do not fit the model: wrong width, non-finite or missing values, a missing column, text in a
numeric column (the CLI's wording), 409 a reload refused.

Reading a body (limits, JSON, CSV, ``.npy``, names, numbers, a series) is
:mod:`vae_anomaly.integrations.http_bodies`; this module is the app: routes, the token, metrics,
reloads, and ``serve``.

Hot reload: before each request the model file's (inode, size, mtime) is compared with the loaded
one; ``fit`` replaces the file atomically, so a changed file is complete and is loaded in full. A
file that fails to load is refused and the previous model keeps serving.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from ..deploy import series
from ..deploy.monitoring import attribution
from ..deploy.scorer import Scorer
from ..errors import InputValidationError, ModelArtifactError, VaeAnomalyError
from .http_bodies import (
    HTTPError,
    as_float,
    json_numbers,
    named_records,
    parse_request,
    read_body,
    score_body,
    top_k,
    wide_ints,
)

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_CONTENT_KINDS = {"application/json": "json", "text/csv": "csv", "application/x-npy": "npy",
                  "application/octet-stream": "npy"}
#: environment variable holding the bearer token (read when no token file is given; how ``serve``
#: passes the token to its worker processes)
TOKEN_ENV = "VAE_ANOMALY_TOKEN"
_TOKEN = re.compile(r"[\x21-\x7e]{16,}")  # printable ASCII, no spaces, at least 16 characters


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


def _model_summary(scorer: Scorer) -> dict:
    """What a client needs to know of the serving model (``GET /model``): its input columns and their
    kinds (no categories), ID columns, a window model's series (with its seasons), the condition a
    client sends (None for a window model), scores, alpha,
    thresholds, version and id; not the training data's statistics, categories or calibration scores."""
    meta, table, spec = scorer.metadata, scorer.table, scorer.series
    id_columns = spec["id_columns"] if spec is not None else table["id_columns"] if table is not None else []
    return {
        "model_id": scorer.model_id, "library_version": meta["library_version"],
        "schema_version": meta["schema_version"], "n_features": scorer.n_features,
        "input_shape": list(scorer.input_shape),
        "columns": None if table is None else [{"name": f["name"], "kind": f["kind"]} for f in table["features"]],
        "id_columns": id_columns,
        "series": None if spec is None else {**{k: spec[k] for k in ("window", "time_column", "step_seconds", "metrics")},
                                             "time_unit": spec.get("time_unit"), "season": spec.get("season", [])},
        # a window model's condition (its seasons) comes from the time column, never from the client
        "condition": scorer.condition if spec is None else None,
        "score_names": scorer.score_names, "default_score": scorer.default_score,
        "score_direction": meta.get("score_direction"), "alpha": scorer.alpha, "thresholds": meta["thresholds"],
        "auto_threshold": meta.get("auto_threshold"), "n_calibration": len(scorer.calibration[scorer.default_score]),
    }


def create_app(model_path: str | os.PathLike, *, max_rows: int = DEFAULT_MAX_ROWS,
               max_bytes: int = DEFAULT_MAX_BYTES, token: str | None = None) -> FastAPI:
    """The ASGI app serving ``model_path``. With ``token``, every route but ``/healthz`` (and the
    schema at ``/docs``, ``/openapi.json``) answers 401 unless the request carries
    ``Authorization: Bearer <token>``.

    Raises
    ------
    InputValidationError : a token that is not 16 or more printable ASCII characters without spaces.
    ModelArtifactError : the model cannot be loaded at start.
    """
    expected = None if token is None else _checked_token(token, "token").encode("ascii")
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
    bearer = HTTPBearer(auto_error=False, description="the token `vae-anomaly serve` was started with")

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        """Refuse (401) a request that does not carry the service's token."""
        if credentials is None:
            raise HTTPError(401, "unauthorized", "Authorization: no bearer token; expected the header "
                                                 "'Authorization: Bearer <token>' with the token the service was "
                                                 "started with (serve --token-file).",
                            headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode("latin-1"), expected):
            raise HTTPError(401, "unauthorized", "Authorization: the bearer token does not match; expected the "
                                                 "token the service was started with (serve --token-file).",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    guarded = [] if token is None else [Depends(authorize)]  # the dependencies of every route but /healthz

    @app.exception_handler(HTTPError)
    async def refused(request: Request, e: HTTPError) -> JSONResponse:
        """An HTTPError raised before an endpoint runs (the token check), answered and counted as the others."""
        errors.labels(e.kind).inc()
        requests.labels(request.url.path, str(e.status)).inc()
        return JSONResponse({"error": str(e), "kind": e.kind}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        """A query parameter FastAPI cannot read (``/model?detail=maybe``): 400 with one line."""
        first = e.errors()[0]
        where = " ".join(str(part) for part in first["loc"])
        return await refused(request, HTTPError(400, "malformed", f"{where}: got {str(first.get('input'))[:40]!r}; "
                                                                  f"{first['msg'].lower()}."))

    def answer(endpoint: str, status: int, payload: dict, started: float) -> JSONResponse:
        requests.labels(endpoint, str(status)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - started)
        return JSONResponse(payload, status_code=status)

    def fail(endpoint: str, e: HTTPError, started: float) -> JSONResponse:
        errors.labels(e.kind).inc()
        return answer(endpoint, e.status, {"error": str(e), "kind": e.kind}, started)

    @app.post("/score", dependencies=guarded, openapi_extra={"requestBody": {"required": True, "content": {
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
        ``ids``: the model's ID columns the body has; ``top_features`` (a window model: ``top_metrics``)
        with ``features`` > 0."""
        started = time.perf_counter()
        try:
            kind = _CONTENT_KINDS.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
            if kind is None:
                raise HTTPError(415, "unsupported_media_type",
                                f"content type {request.headers.get('content-type')!r}: expected one of "
                                f"{', '.join(_CONTENT_KINDS)}.")
            body = await read_body(request, max_bytes)
            form, payload, options = parse_request(kind, body, dict(request.query_params), max_rows)
            scorer = holder.current()
            if form == "records":
                try:
                    payload = named_records(payload, scorer)
                except InputValidationError as e:
                    raise HTTPError(422, "invalid_rows", str(e)) from None
                payload = wide_ints(payload, scorer)
            try:
                threshold = options.get("threshold", "auto")
                threshold = threshold if threshold == "auto" else as_float(threshold)
                alpha = None if options.get("alpha") is None else as_float(options["alpha"])
            except (TypeError, ValueError):
                raise HTTPError(400, "malformed", "threshold: expected 'auto' or a number; alpha: a number.") from None
            k = top_k(options.get("features"))
            time_order = options.get("time_order", "strict")
            if time_order not in series.TIME_ORDERS:
                raise HTTPError(400, "malformed", f"time_order: got {time_order!r}; expected one of "
                                                  f"{', '.join(series.TIME_ORDERS)}.")
            result, ids = await run_in_threadpool(score_body, scorer, form, payload, max_rows, time_order,
                                                  score=options.get("score"),
                                                  threshold=threshold, alpha=alpha,
                                                  condition=options.get("condition"), feature_terms=k > 0)
        except HTTPError as e:
            return fail("/score", e, started)
        rows_scored.inc(len(result.scores))
        flagged.inc(int(result.is_anomaly.sum()))
        answer_body = {
            "scores": json_numbers(result.scores.tolist()), "p_values": json_numbers(result.p_values.tolist()),
            "is_anomaly": result.is_anomaly.tolist(), "model_id": scorer.model_id, "score": result.score_name,
            "threshold": result.threshold if np.isfinite(result.threshold) else None, "alpha": result.alpha,
        }
        if ids is not None:
            answer_body["ids"] = ids
        if k > 0:
            column, top = attribution(result, scorer, k)
            answer_body[column] = top
        return answer("/score", 200, answer_body, started)

    @app.post("/reload", dependencies=guarded)
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

    @app.get("/readyz", dependencies=guarded)
    def readyz() -> dict:
        """A model is loaded and serving."""
        scorer = holder.current()
        return {"status": "ready", "model_id": scorer.model_id, "last_reload_error": holder.last_error}

    @app.get("/model", dependencies=guarded)
    def model(detail: bool = False) -> dict:
        """What a client needs of the serving model: input columns and their kinds, ID columns, scores,
        alpha, thresholds, version and id; ``detail=true`` adds the file's path and the full metadata
        (as ``vae-anomaly info``: training statistics, categories, calibration scores)."""
        scorer = holder.current()
        summary = _model_summary(scorer)
        return {**summary, "path": str(holder.path), "metadata": scorer.metadata} if detail else summary

    @app.get("/metrics", dependencies=guarded)
    def metrics() -> Response:
        """Prometheus text format: requests, rows scored, anomalies flagged, latency, errors, reloads."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _checked_token(token: str, label: str) -> str:
    """``token`` if it is usable as a bearer token: 16 or more printable ASCII characters without spaces.

    Raises
    ------
    InputValidationError : naming ``label`` (where the token came from) and how to make one.
    """
    if not _TOKEN.fullmatch(token):
        raise InputValidationError(
            f"{label}: {'empty' if not token else 'not a usable token'}; expected 16 or more printable ASCII "
            "characters without spaces on one line, e.g. written by "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt.")
    return token


def _read_token(token_file: str | os.PathLike | None) -> str | None:
    """The bearer token: ``token_file``'s text (surrounding whitespace stripped), else the
    :data:`TOKEN_ENV` environment variable's, else None (no token).

    Raises
    ------
    InputValidationError : a token file that cannot be read; a token that is empty or not usable
        (:func:`_checked_token`).
    """
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise InputValidationError(f"--token-file {token_file}: cannot be read ({e.strerror}); expected a "
                                       "file holding the bearer token on one line.") from None
        return _checked_token(text.strip(), f"--token-file {token_file}")
    if TOKEN_ENV in os.environ:
        return _checked_token(os.environ[TOKEN_ENV].strip(), TOKEN_ENV)
    return None


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: settings come from VAE_ANOMALY_* environment variables
    (the token from :data:`TOKEN_ENV`, if set)."""
    return create_app(os.environ["VAE_ANOMALY_MODEL"],
                      max_rows=int(os.environ.get("VAE_ANOMALY_MAX_ROWS", DEFAULT_MAX_ROWS)),
                      max_bytes=int(os.environ.get("VAE_ANOMALY_MAX_BYTES", DEFAULT_MAX_BYTES)),
                      token=_read_token(None))


def serve(model_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES,
          token_file: str | os.PathLike | None = None, no_token: bool = False,
          say: Callable[[str], None] | None = None) -> None:
    """Run the service with uvicorn until interrupted: the library call behind ``vae-anomaly serve``.

    The token comes from ``token_file``, else the :data:`TOKEN_ENV` environment variable; with one,
    every route but ``/healthz`` needs it. Without one, a ``host`` beyond loopback is refused unless
    ``no_token``. The options are checked and the model is loaded once here first, so a bad token or
    model is refused before the port is bound; then ``say`` (if given) is told where the service
    listens, and each of the ``workers`` processes builds its app from the environment.

    Raises
    ------
    InputValidationError : a token file that cannot be read or a token that is not usable; a host
        beyond loopback without a token or ``no_token``; ``no_token`` with a token.
    ModelArtifactError : the model cannot be loaded.
    """
    import uvicorn

    token = _read_token(token_file)
    if no_token and token is not None:
        raise InputValidationError(f"--no-token: a token is given too ({'--token-file' if token_file else TOKEN_ENV}); "
                                   "expected one of the two: drop --no-token to require the token, or the token "
                                   "to serve without one.")
    if token is None and not no_token and not _is_loopback(host):
        raise InputValidationError(f"--host {host}: beyond loopback without a token, anyone who reaches the port "
                                   "could score, read the model and reload it; give --token-file PATH (clients "
                                   "then send 'Authorization: Bearer <token>'), or --no-token to serve openly on "
                                   "purpose.")
    Scorer(model_path)
    os.environ.update(VAE_ANOMALY_MODEL=str(Path(model_path).resolve()), VAE_ANOMALY_MAX_ROWS=str(max_rows),
                      VAE_ANOMALY_MAX_BYTES=str(max_bytes), **({} if token is None else {TOKEN_ENV: token}))
    if say is not None:
        say(f"serving {model_path} on http://{host}:{port} ({workers} worker(s), "
            f"{'no token' if token is None else 'bearer token required'}); docs at /docs")
    uvicorn.run("vae_anomaly.integrations.service:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="warning")
