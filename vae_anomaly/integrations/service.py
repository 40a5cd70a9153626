"""The HTTP scoring service behind ``vae-anomaly serve`` (FastAPI + uvicorn, extra ``[serve]``).

Every request scores through the same :class:`~vae_anomaly.deploy.scorer.Scorer` as the CLI, so a row
gets the same score, p-value and flag over HTTP as from ``vae-anomaly score``.

Endpoints: ``POST /score`` (JSON ``{"rows": [[...], ...]}``, or a CSV body as ``text/csv``, or
``.npy`` bytes as ``application/x-npy``), ``POST /reload``, ``GET /healthz``, ``GET /readyz``,
``GET /model``, ``GET /metrics`` (Prometheus text format), and the framework's ``/openapi.json``.

Status codes: 400 malformed body, 413 body or row count over the limit, 415 unknown content type,
422 rows of the wrong width or with non-finite values (the CLI's wording), 409 a reload refused.

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

from ..deploy.io import parse_matrix_bytes
from ..deploy.scorer import Scorer
from ..errors import InputValidationError, VaeAnomalyError

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_CONTENT_KINDS = {"application/json": "json", "text/csv": "csv", "application/x-npy": "npy",
                  "application/octet-stream": "npy"}


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message, "kind": kind}`` with ``status``."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


class ModelHolder:
    """The serving model; reloads when the file on disk changes, keeps the old one if the new fails."""

    def __init__(self, path: str | os.PathLike, on_reload_error):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._on_reload_error = on_reload_error
        self.scorer = Scorer(self.path)
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
                    self.scorer = Scorer(self.path)
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


def _parse_request(kind: str, body: bytes, params: dict, max_rows: int) -> tuple[np.ndarray, dict]:
    """Body -> (rows, options). Raises HTTPError 400 for a malformed body."""
    options = {k: params[k] for k in ("alpha", "threshold", "score") if k in params}
    if kind == "json":
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, "malformed", f"request body: not valid JSON ({e}).") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise HTTPError(400, "malformed", 'request body: expected a JSON object {"rows": [[...], ...]}.')
        options.update({k: doc[k] for k in ("alpha", "threshold", "score", "condition") if k in doc})
        rows = doc["rows"]
        if len(rows) > max_rows:
            raise HTTPError(413, "too_large", f"request body: {len(rows)} rows; the limit is {max_rows}.")
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
    return X, options


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
        "application/json": {"schema": {"type": "object", "required": ["rows"], "properties": {
            "rows": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "alpha": {"type": "number"}, "threshold": {"oneOf": [{"type": "string", "enum": ["auto"]}, {"type": "number"}]},
            "score": {"type": "string", "enum": ["neg-elbo", "recon-prob", "iwae"]},
            "condition": {"type": "array", "description": "a conditional model's condition per row: "
                                                          "category ids, one-hot rows or numeric context rows"}}}},
        "text/csv": {"schema": {"type": "string"}},
        "application/x-npy": {"schema": {"type": "string", "format": "binary"}}}}})
    async def score(request: Request) -> JSONResponse:
        """Score rows: higher score = more anomalous; p_values are conformal; is_anomaly at the threshold."""
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
            X, options = _parse_request(kind, body, dict(request.query_params), max_rows)
            scorer = holder.current()
            try:
                threshold = options.get("threshold", "auto")
                threshold = threshold if threshold == "auto" else float(threshold)
                alpha = None if options.get("alpha") is None else float(options["alpha"])
            except (TypeError, ValueError):
                raise HTTPError(400, "malformed", "threshold: expected 'auto' or a number; alpha: a number.") from None
            try:
                result = await run_in_threadpool(scorer.predict, X, score=options.get("score"), threshold=threshold,
                                                 alpha=alpha, name="request rows", condition=options.get("condition"))
            except InputValidationError as e:
                raise HTTPError(422, "invalid_rows", str(e)) from None
        except HTTPError as e:
            return fail("/score", e, started)
        rows_scored.inc(len(result.scores))
        flagged.inc(int(result.is_anomaly.sum()))
        return answer("/score", 200, {
            "scores": result.scores.tolist(), "p_values": result.p_values.tolist(),
            "is_anomaly": result.is_anomaly.tolist(), "model_id": scorer.model_id, "score": result.score_name,
            "threshold": result.threshold if np.isfinite(result.threshold) else None, "alpha": result.alpha,
        }, started)

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
