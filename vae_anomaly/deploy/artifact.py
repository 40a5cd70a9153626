"""The model file: one self-contained ONNX graph with JSON metadata (docs/model-file.md; no torch).

Graph contract (schema version 1):

* input ``x``: float32, shape (n_rows, n_features), raw (unstandardized) features; an image model
  takes each image flattened in C order (the metadata's ``input_shape`` is one row's shape as fitted);
* input ``condition`` (conditional models only, metadata ``condition``): float32, (n_rows, m), one-hot
  categories or the raw numeric context (:mod:`vae_anomaly.deploy.conditions`);
* outputs ``neg_elbo``, ``recon_prob``, ``iwae``: float32, shape (n_rows,), higher = more anomalous;
* output ``feature_terms``: float32, shape (n_rows, n_features), summing to ``recon_prob``;
* output ``latent_mean``: float32, shape (n_rows, latent_dim), the encoder's mean μ(x).

A second, generation graph (inputs ``noise`` (n, latent_dim) [and ``condition``], output ``sample``
(n, n_features): decoder means at z drawn from the prior) is stored inside the same file, as
base64 ONNX under the ``metadata_props`` key :data:`SAMPLER_KEY`, with the same safety checks.

The metadata is one JSON document under the key :data:`METADATA_KEY` of the ONNX
``metadata_props``, so it is readable through onnxruntime's ``get_modelmeta().custom_metadata_map``
without the ``onnx`` package. Loading refuses tensors stored as external data (the ONNX
path-traversal CVEs: CVE-2022-25882, CVE-2024-27318, CVE-2026-27489).

The file is sealed with a SHA-256 (:data:`CHECKSUM_KEY` in ``metadata_props``) of the ModelProto
serialized without that entry: the graph, its weights, the metadata and the generation graph.
Loading recomputes it and refuses a file that was modified or damaged after it was written
(:func:`model_checksum`, :func:`seal`). The checksum is an integrity check, not a proof of origin:
anyone can seal an edited file again. With a secret key in the environment variable
:data:`KEY_ENV`, writing also signs the file (an HMAC-SHA256, :data:`SIGNATURE_KEY`,
:func:`model_signature`) and loading refuses a file without a valid signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputValidationError, ModelArtifactError
from . import conditions, onnx_proto
from .schema import VALUE_KINDS
from .series import SEASONS, STEP_SECONDS_RANGE, TIME_UNITS
from .calibration import CALIBRATION_CAP

METADATA_KEY = "vae_anomaly"
SCHEMA_VERSION = 1
INPUT_NAME = "x"
#: CLI score name -> graph output name. The first is the default unless the metadata says otherwise.
SCORE_OUTPUTS = {"neg-elbo": "neg_elbo", "recon-prob": "recon_prob", "iwae": "iwae"}
FEATURE_TERMS_OUTPUT = "feature_terms"
LATENT_OUTPUT = "latent_mean"
CONDITION_NAME = "condition"
SAMPLER_KEY = "vae_anomaly.sampler"
#: metadata_props key of the file's SHA-256 (hex) over everything else in it (:func:`model_checksum`)
CHECKSUM_KEY = "vae_anomaly.sha256"
#: metadata_props key of the optional HMAC-SHA256 (hex) with the user's key (:func:`model_signature`)
SIGNATURE_KEY = "vae_anomaly.hmac_sha256"
#: the environment variable holding that key: set when a file is written, the file is signed; set
#: when one is loaded, a file without a valid signature is refused
KEY_ENV = "VAE_ANOMALY_MODEL_KEY"
NOISE_INPUT, SAMPLE_OUTPUT = "noise", "sample"
MAX_MODEL_BYTES = 512 * 1024 * 1024
#: the largest size the metadata may give: columns, latent size, categories, mixture components, latent samples
MAX_SIZE = 2**24
#: the largest count of rows or epochs the metadata may give (JSON numbers are exact integers below it)
MAX_COUNT = 2**53
_REQUIRED = (
    "schema_version", "library_version", "n_features", "score_names", "default_score",
    "alpha", "calibration", "thresholds", "training", "feature_mean", "feature_std",
)


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """Read a model file, refusing a missing file or one over :data:`MAX_MODEL_BYTES`.

    Raises
    ------
    ModelArtifactError
    """
    p = Path(path)
    if not p.is_file():
        raise ModelArtifactError(
            f"{p}: model file not found; expected a model.onnx written by 'vae-anomaly fit'. "
            "Fit a model first or pass -m PATH."
        )
    if p.stat().st_size > MAX_MODEL_BYTES:
        raise ModelArtifactError(f"{p}: {p.stat().st_size} bytes; expected a model under 512 MiB.")
    return p.read_bytes()


def _iter_tensors(graph):
    """Every TensorProto in a graph (or a local function), its nodes' attributes and subgraphs."""
    yield from getattr(graph, "initializer", ())
    for sparse in getattr(graph, "sparse_initializer", ()):
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_tensors(attr.g)
            for g in attr.graphs:
                yield from _iter_tensors(g)


def parse_model(data: bytes, name: str) -> tuple[Any, dict]:
    """Parse model bytes, refuse external data, and return (ModelProto, metadata dict).

    Raises
    ------
    ModelArtifactError
        Not an ONNX protobuf, tensors in external data, no vae-anomaly metadata, an unknown
        schema version, or graph inputs/outputs that disagree with the metadata.
    """
    model = _load_self_contained(data, name)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelArtifactError(
            f"{name}: ONNX model has no {METADATA_KEY!r} metadata; expected a model written by "
            "'vae-anomaly fit'."
        )
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ModelArtifactError(f"{name}: metadata is not valid JSON ({e}).") from None
    check_metadata(meta, name)
    inputs = [i.name for i in model.graph.input]
    expected_in = [INPUT_NAME] + ([CONDITION_NAME] if meta.get("condition") else [])
    outputs = {o.name for o in model.graph.output}
    expected_out = {SCORE_OUTPUTS[s] for s in meta["score_names"]} | {FEATURE_TERMS_OUTPUT}
    if inputs != expected_in or not expected_out <= outputs:
        raise ModelArtifactError(
            f"{name}: graph inputs {inputs} / outputs {sorted(outputs)} disagree with the metadata; "
            f"expected inputs {expected_in} and outputs {sorted(expected_out)}."
        )
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != meta["n_features"]:
        raise ModelArtifactError(
            f"{name}: graph input shape disagrees with metadata n_features={meta['n_features']}."
        )
    _check_graph_sizes(model, meta, name)
    _verify_checksum(model, props.get(CHECKSUM_KEY), name)
    _verify_signature(model, props.get(SIGNATURE_KEY), name)
    return model, meta


def _check_graph_sizes(model, meta: dict, name: str) -> None:
    """Refuse a ``latent_dim`` or ``condition`` size other than the graph's (``latent_mean``'s width,
    the ``condition`` input's width), where the graph states one."""
    widths = {v.name: v.type.tensor_type.shape.dim for v in [*model.graph.input, *model.graph.output]}
    for tensor, field, size in ((LATENT_OUTPUT, "latent_dim", meta.get("latent_dim")),
                                (CONDITION_NAME, "condition", conditions.width(meta.get("condition")))):
        dims = widths.get(tensor)
        if size and dims is not None and len(dims) == 2 and dims[1].dim_value \
                and dims[1].dim_value != size:
            raise ModelArtifactError(f"{name}: metadata {field} gives {size} columns, but the graph's {tensor!r} "
                                     f"has {dims[1].dim_value}; the file was edited. Re-create it with "
                                     "'vae-anomaly fit'.")


def _serialized_without(model, keys: tuple[str, ...]) -> bytes:
    """``model`` (a ModelProto) serialized without its ``metadata_props`` entries named in ``keys``;
    ``model`` is left as it was."""
    entries = model.metadata_props
    tail = 0
    while tail < len(entries) and entries[len(entries) - 1 - tail].key in keys:
        tail += 1
    if not any(p.key in keys for p in entries[: len(entries) - tail]):
        # where seal() puts them, last: cheaper than copying every entry (1 ms on 2 MB)
        last = [entries.pop() for _ in range(tail)]
        try:
            return model.SerializeToString()
        finally:
            entries.extend(reversed(last))
    props = list(entries)
    keep = [p for p in props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    try:
        return model.SerializeToString()
    finally:
        del model.metadata_props[:]
        model.metadata_props.extend(props)


def model_checksum(model) -> str:
    """SHA-256 (hex) of ``model`` (a ModelProto) serialized without its :data:`CHECKSUM_KEY` entry.

    Everything else is covered: the graph and its weights, the producer, every other
    ``metadata_props`` entry (the JSON metadata, the generation graph, the signature). Protobuf
    writes a message's fields in field-number order, so serializing the same message gives the same
    bytes; the writer checks this by loading what it wrote. ``model`` is left as it was.

    An integrity check only: anyone holding the file can compute it again for an edited file
    (:func:`seal`); a proof of who wrote the file is the signature, :func:`model_signature`.
    """
    return hashlib.sha256(_serialized_without(model, (CHECKSUM_KEY,))).hexdigest()


def model_signature(model, key: bytes) -> str:
    """HMAC-SHA256 (hex) with ``key`` of ``model`` (a ModelProto) serialized without its
    :data:`CHECKSUM_KEY` and :data:`SIGNATURE_KEY` entries: the bytes the checksum covers in an
    unsigned file. Only a holder of ``key`` can compute it. ``model`` is left as it was."""
    return hmac.new(key, _serialized_without(model, (SIGNATURE_KEY, CHECKSUM_KEY)), hashlib.sha256).hexdigest()


def model_key() -> bytes | None:
    """The signing key: the bytes of the environment variable :data:`KEY_ENV`, or None when it is unset.

    Raises
    ------
    InputValidationError : the variable is set but empty.
    """
    value = os.environ.get(KEY_ENV)
    if value is None:
        return None
    if not value:
        raise InputValidationError(f"{KEY_ENV}: set but empty; expected the secret key that signs and verifies "
                                   "model files (e.g. 64 random hex digits), or the variable unset.")
    return os.fsencode(value)


def seal(model) -> None:
    """Seal ``model`` (a ModelProto) again: with a key in :data:`KEY_ENV`, its :data:`SIGNATURE_KEY`
    entry (:func:`model_signature`), then its :data:`CHECKSUM_KEY` entry, the last one; earlier
    entries of both are dropped (without a key, the file is left unsigned).

    Raises
    ------
    InputValidationError : :data:`KEY_ENV` is set but empty.
    """
    key = model_key()
    keep = [p for p in model.metadata_props if p.key not in (CHECKSUM_KEY, SIGNATURE_KEY)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    if key is not None:
        model.metadata_props.add(key=SIGNATURE_KEY, value=model_signature(model, key))
    model.metadata_props.add(key=CHECKSUM_KEY, value=model_checksum(model))


def _verify_checksum(model, stored: str | None, name: str) -> None:
    if stored is None:
        raise ModelArtifactError(
            f"{name}: the model file carries no checksum ({CHECKSUM_KEY!r}); it was written by an older "
            "vae-anomaly or assembled by hand. Re-create it with 'vae-anomaly fit'."
        )
    if sum(p.key == CHECKSUM_KEY for p in model.metadata_props) != 1:
        raise ModelArtifactError(f"{name}: the model file carries more than one checksum entry; the file "
                                 "was modified after it was written. Re-create it with 'vae-anomaly fit'.")
    actual = model_checksum(model)
    if actual != stored:
        raise ModelArtifactError(
            f"{name}: checksum mismatch: the file was modified or damaged after it was written (expected "
            f"{stored if stored.isalnum() and len(stored) <= 64 else repr(stored[:64])}, got {actual}); "
            "re-create it with 'vae-anomaly fit'."
        )


def _verify_signature(model, stored: str | None, name: str) -> None:
    """With a key in :data:`KEY_ENV`, refuse a file whose signature is missing or not that key's."""
    key = model_key()
    if key is None:
        return
    if stored is None:
        raise ModelArtifactError(f"{name}: the model file is not signed, and {KEY_ENV} is set: only files signed "
                                 f"with that key load. Re-create it with 'vae-anomaly fit' with {KEY_ENV} set, or "
                                 "unset it to load unsigned files.")
    if sum(p.key == SIGNATURE_KEY for p in model.metadata_props) != 1 or not hmac.compare_digest(
            stored.encode("utf-8", "surrogatepass"), model_signature(model, key).encode("ascii")):
        raise ModelArtifactError(f"{name}: signature mismatch: the file was not signed with the key in {KEY_ENV}, "
                                 "or was modified and sealed again after it was signed; re-create it with "
                                 f"'vae-anomaly fit' with {KEY_ENV} set.")


def _load_self_contained(data: bytes, name: str):
    """The ModelProto in ``data``, refusing anything but a self-contained ONNX protobuf."""
    pb = onnx_proto.messages()
    try:
        model = pb.ModelProto.FromString(data)
    except Exception:  # protobuf raises its own DecodeError and sometimes RuntimeError
        raise ModelArtifactError(
            f"{name}: not a valid ONNX model (protobuf parsing failed); the file is corrupted or "
            "truncated. Re-create it with 'vae-anomaly fit'."
        ) from None
    for g in [model.graph, *model.functions]:
        for t in _iter_tensors(g):
            if t.data_location == pb.TensorProto.EXTERNAL or len(t.external_data):
                raise ModelArtifactError(
                    f"{name}: tensor {t.name!r} is stored as external data; expected a "
                    "self-contained model. External data is refused for safety."
                )
    return model


def sampler_model(model, name: str):
    """The generation graph stored in ``model`` (a parsed model file), checked like the model.

    Raises
    ------
    ModelArtifactError : the file has no generation graph (written before vae-anomaly stored
        one: re-fit), or it is corrupted or unsafe.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if SAMPLER_KEY not in props:
        raise ModelArtifactError(f"{name}: the model holds no generation graph; re-fit it with this "
                                 "vae-anomaly to sample from it.")
    try:
        data = base64.b64decode(props[SAMPLER_KEY], validate=True)
    except ValueError:
        raise ModelArtifactError(f"{name}: the generation graph is not valid base64; the file is corrupted.") from None
    sampler = _load_self_contained(data, f"{name} (generation graph)")
    if [o.name for o in sampler.graph.output] != [SAMPLE_OUTPUT]:
        raise ModelArtifactError(f"{name}: the generation graph has no {SAMPLE_OUTPUT!r} output.")
    return sampler


def attach_metadata(data: bytes, meta: dict, producer_version: str, name: str, *,
                    sampler: bytes | None = None) -> bytes:
    """The ONNX model in ``data`` with ``meta`` as its metadata (and the generation graph
    ``sampler``, when given; other metadata entries are kept), sealed with a fresh checksum
    (:func:`seal`); it must pass :func:`parse_model`.

    Raises
    ------
    ModelArtifactError : the result would not load.
    """
    model = onnx_proto.messages().ModelProto.FromString(data)
    model.producer_name, model.producer_version = "vae-anomaly", producer_version
    props = {p.key: p.value for p in model.metadata_props}  # a recalibrated model keeps its sampler
    props[METADATA_KEY] = json.dumps(meta)
    if sampler is not None:
        props[SAMPLER_KEY] = base64.b64encode(sampler).decode("ascii")
    props.pop(CHECKSUM_KEY, None)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    seal(model)
    final = model.SerializeToString()
    parse_model(final, name)  # also recomputes the checksum from the written bytes
    return final


def write_model(path: str | os.PathLike, data: bytes, meta: dict, producer_version: str) -> None:
    """Attach ``meta`` to the ONNX model in ``data`` and write it atomically to ``path``.

    Raises
    ------
    ModelArtifactError : the result would not load. OutputWriteError : cannot write.
    """
    from .io import atomic_write

    final = attach_metadata(data, meta, producer_version, str(path))
    with atomic_write(path) as f:
        f.write(final)


def check_metadata(meta: dict, name: str) -> None:
    """Check the metadata's schema version, required keys, scores and calibration, the optional
    ``table`` / ``feature_names`` / ``n_feature_terms`` and ``series`` entries, and bound every
    number it holds (docs/model-file.md, "What loading refuses").

    Raises
    ------
    ModelArtifactError : the first entry that is missing, malformed or out of its bounds, named.
    """
    if not isinstance(meta, dict):
        raise ModelArtifactError(f"{name}: metadata is not a JSON object.")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelArtifactError(
            f"{name}: model schema version {version!r}; this vae-anomaly reads version "
            f"{SCHEMA_VERSION}. Re-fit the model or upgrade vae-anomaly."
        )
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ModelArtifactError(f"{name}: metadata lacks {missing}; the file is not a complete model.")
    _check_scores(meta, name)
    _check_columns(meta, name)
    _check_series(meta, name)
    _check_numbers(meta, name)


def _out_of_bounds(name: str, field: str, value, expected: str) -> ModelArtifactError:
    """The one-line refusal of a metadata value that is not what the writer writes."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ModelArtifactError(f"{name}: metadata {field}={shown}; expected {expected}. The file is damaged or was "
                              "edited; re-create it with 'vae-anomaly fit'.")


def _is_int(value, low: int, high: int = MAX_SIZE) -> bool:
    """Whether ``value`` is an integer (not a boolean) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value) -> bool:
    """Whether ``value`` is a JSON number (not a boolean) other than NaN; ±inf are numbers."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _numbers(value, n: int | None = None) -> np.ndarray | None:
    """``value`` as float64 (k,) when it is a list of k numbers (k = ``n`` when given), else None."""
    arr = np.asarray(value) if isinstance(value, list) else None
    if arr is None or arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iuf") or n not in (None, arr.size):
        return None
    return arr.astype(np.float64)


def _check_scores(meta: dict, name: str) -> None:
    """Check the score names, the calibration scores (per score, 1 to CALIBRATION_CAP sorted numbers,
    ``n_calibration`` of them), ``thresholds`` and ``auto_threshold``."""
    names, default = meta["score_names"], meta["default_score"]
    if not isinstance(names, list) or not all(isinstance(s, str) and s in SCORE_OUTPUTS for s in names) \
            or default not in names:
        raise ModelArtifactError(f"{name}: metadata score_names {names!r} (default {default!r}); expected some of "
                                 f"{', '.join(SCORE_OUTPUTS)}, the default among them.")
    if not isinstance(meta["calibration"], dict) or not isinstance(meta["thresholds"], dict):
        raise ModelArtifactError(f"{name}: metadata calibration and thresholds must be JSON objects (score -> "
                                 "values).")
    n_cal = meta.get("n_calibration")
    if n_cal is not None and not _is_int(n_cal, 1, CALIBRATION_CAP):
        raise _out_of_bounds(name, "n_calibration", n_cal, f"an integer from 1 to {CALIBRATION_CAP}")
    for s in names:
        cal = _numbers(meta["calibration"].get(s))
        if cal is None or not 1 <= cal.size <= CALIBRATION_CAP or np.isnan(cal).any() or np.any(np.diff(cal) < 0) \
                or n_cal not in (None, cal.size):
            raise _out_of_bounds(name, f"calibration[{s!r}]", meta["calibration"].get(s),
                                 f"1 to {CALIBRATION_CAP} sorted numbers, none NaN"
                                 + ("" if n_cal is None else f", n_calibration ({n_cal}) of them"))
        threshold = meta["thresholds"].get(s)
        if threshold is not None and not _is_number(threshold):
            raise _out_of_bounds(name, f"thresholds[{s!r}]", threshold, "null or a number")
    cap = meta.get("calibration_cap")
    if cap is not None and not _is_int(cap, 1, MAX_COUNT):
        raise _out_of_bounds(name, "calibration_cap", cap, "a positive integer")
    rule = meta.get("auto_threshold")
    if rule is not None and not (isinstance(rule, dict) and rule.get("rule") in ("f1", "recall")
                                 and rule.get("score") in names and _is_number(rule.get("value"))
                                 and _is_number(rule.get("recall", 1)) and 0 < rule.get("recall", 1) <= 1):
        raise _out_of_bounds(name, "auto_threshold", rule, 'null or {"rule": "f1" or "recall", "score": one of the '
                             'score names, "value": a number[, "recall": in (0, 1]]}')


def _check_numbers(meta: dict, name: str) -> None:
    """Bound the numbers :func:`_check_scores`, :func:`_check_columns` and :func:`_check_series` leave:
    alpha, latent_dim, input_shape, the standardization, the condition's size, and what ``training``
    and ``recalibration`` record as counts (a hand-edited α = 5 would flag every row)."""
    n_features = meta["n_features"]
    alpha = meta["alpha"]
    if not (_is_number(alpha) and 0 < alpha < 1):
        raise _out_of_bounds(name, "alpha", alpha, "a false-alarm rate strictly between 0 and 1")
    k = meta.get("latent_dim")
    if k is not None and not _is_int(k, 1):
        raise _out_of_bounds(name, "latent_dim", k, f"an integer from 1 to {MAX_SIZE}")
    shape = meta.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and 1 <= len(shape) <= 3
                                  and all(_is_int(d, 1) for d in shape) and int(np.prod(shape)) == n_features):
        raise _out_of_bounds(name, "input_shape", shape, f"null or 1 to 3 positive sizes whose product is "
                             f"n_features ({n_features})")
    for field, positive in (("feature_mean", False), ("feature_std", True)):
        values = _numbers(meta[field], n_features)
        if values is None or not np.isfinite(values).all() or (positive and not (values > 0).all()):
            raise _out_of_bounds(name, field, meta[field], f"{n_features} finite numbers (n_features)"
                                 + (", each > 0" if positive else ""))
    spec = meta.get("condition")
    if spec is not None and not (isinstance(spec, dict) and (
            (spec.get("kind") == "categorical" and _is_int(spec.get("n_categories"), 1))
            or (spec.get("kind") == "numeric" and _is_int(spec.get("size"), 1)))):
        raise _out_of_bounds(name, "condition", spec, f'null, {{"kind": "categorical", "n_categories": 1 to '
                             f'{MAX_SIZE}}} or {{"kind": "numeric", "size": 1 to {MAX_SIZE}}}')
    training = meta["training"]
    if not isinstance(training, dict):
        raise _out_of_bounds(name, "training", training, "a JSON object")
    counts = ("n_rows", "n_train", "n_val", "epochs_run", "max_epochs", "best_epoch", "resumed_from_epoch")
    bounded = [(f"training.{key}", training.get(key), 0, MAX_COUNT) for key in counts]
    for key, sub in (("latent_prior", "components"), ("config", "n_samples")):  # they size the Scorer's chunks
        entry = training.get(key, {})
        if not isinstance(entry, dict):
            raise _out_of_bounds(name, f"training.{key}", entry, "a JSON object")
        bounded.append((f"training.{key}.{sub}", entry.get(sub), 1, MAX_SIZE))
    recalibration = meta.get("recalibration")
    if recalibration is not None:
        bounded.append(("recalibration.rows", recalibration.get("rows") if isinstance(recalibration, dict)
                        else recalibration, 1, MAX_COUNT))
    for field, value, low, high in bounded:
        if value is not None and not _is_int(value, low, high):
            raise _out_of_bounds(name, field, value, f"an integer from {low} to {high}")
    seconds = training.get("seconds")
    if seconds is not None and not (_is_number(seconds) and 0 <= seconds < float("inf")):
        raise _out_of_bounds(name, "training.seconds", seconds, "a finite number >= 0")


def _check_series(meta: dict, name: str) -> None:
    """Check the optional ``series`` entry of a window model (docs/model-file.md): W >= 2, a time
    column, a step within :data:`STEP_SECONDS_RANGE`, metrics and ID columns, n_features = W × metrics,
    a masked graph, counts of inserted steps and out-of-order rows >= 0, and seasons that match the
    graph's condition (2 numeric values each)."""
    spec = meta.get("series")
    if spec is None:
        return
    where = f"{name}: metadata series"
    ok = (isinstance(spec, dict) and _is_int(spec.get("window"), 2) and isinstance(spec.get("time_column"), str)
          and _is_number(spec.get("step_seconds")) and _is_str_list(spec.get("metrics")) and spec["metrics"]
          and _is_str_list(spec.get("id_columns")) and spec["id_columns"][:1] == [spec["time_column"]])
    if not ok:
        raise ModelArtifactError(f"{where} is malformed; expected window >= 2, time_column, step_seconds, "
                                 "metrics and id_columns (the time column first).")
    if spec["window"] * len(spec["metrics"]) != meta["n_features"] or meta.get("missing") != "masked":
        raise ModelArtifactError(f"{where} disagrees with the graph: expected n_features = window × metrics "
                                 f"({spec['window']} × {len(spec['metrics'])}) and a masked graph.")
    low, high = STEP_SECONDS_RANGE
    if not low <= spec["step_seconds"] <= high:
        raise _out_of_bounds(name, "series.step_seconds", spec["step_seconds"], f"a step from {low:g} to {high:g} "
                             "seconds")
    for key in ("inserted_steps", "out_of_order_rows"):
        if key in spec and not _is_int(spec[key], 0, MAX_COUNT):
            raise _out_of_bounds(name, f"series.{key}", spec[key], f"an integer from 0 to {MAX_COUNT}")
    if "time_unit" in spec and spec["time_unit"] not in TIME_UNITS:
        raise _out_of_bounds(name, "series.time_unit", spec["time_unit"], f"one of {', '.join(TIME_UNITS)}")
    season = spec.get("season", [])
    width = 2 * len(season) if isinstance(season, list) else -1
    if not (isinstance(season, list) and len(set(season)) == len(season) and all(p in SEASONS for p in season)) \
            or conditions.width(meta.get("condition")) != width \
            or (width and meta["condition"].get("kind") != "numeric"):
        raise ModelArtifactError(f"{where} season disagrees with the graph: expected distinct seasons of "
                                 f"{', '.join(SEASONS)} and a numeric condition of 2 values each (none without).")


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _check_columns(meta: dict, name: str) -> None:
    """Check the optional ``table``, ``feature_names`` and ``n_feature_terms`` entries (docs/model-file.md).

    Raises
    ------
    ModelArtifactError
    """
    n_features = meta["n_features"]
    if not _is_int(n_features, 1):
        raise _out_of_bounds(name, "n_features", n_features, f"an integer from 1 to {MAX_SIZE}")
    names = meta.get("feature_names")
    if names is not None and not _is_str_list(names):
        raise ModelArtifactError(f"{name}: metadata feature_names must be null or a list of non-empty strings.")
    terms = meta.get("n_feature_terms")
    if terms is not None and not _is_int(terms, 1, n_features):
        raise _out_of_bounds(name, "n_feature_terms", terms, f"an integer from 1 to n_features ({n_features})")
    table = meta.get("table")
    if table is None:
        if names is not None and len(names) != n_features:
            raise ModelArtifactError(f"{name}: metadata feature_names has {len(names)} names; expected one per "
                                     f"input column (n_features={n_features}).")
        return
    where = f"{name}: metadata table"
    if not isinstance(table, dict):
        raise ModelArtifactError(f"{where} is a {type(table).__name__}; expected null or a JSON object.")
    missing = [k for k in ("features", "id_columns", "exclude") if k not in table]
    if missing:
        raise ModelArtifactError(f"{where} lacks {missing}.")
    features = table["features"]
    if not isinstance(features, list) or not features:
        raise ModelArtifactError(f"{where}: features must be a non-empty list.")
    for key in ("id_columns", "exclude"):
        if not _is_str_list(table[key]):
            raise ModelArtifactError(f"{where}: {key} must be a list of non-empty strings.")
    width, seen_categorical = 0, False
    for i, f in enumerate(features):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise ModelArtifactError(f"{where}: features[{i}] must be an object with a non-empty string 'name'.")
        kind = f.get("kind")
        if kind == "numeric":
            if seen_categorical:
                raise ModelArtifactError(f"{where}: numeric feature {f['name']!r} follows a categorical one; "
                                         "expected the numeric features first.")
            if "categories" in f:
                raise ModelArtifactError(f"{where}: numeric feature {f['name']!r} has categories.")
            width += 1
        elif kind == "categorical":
            seen_categorical = True
            cats = f.get("categories")
            if not isinstance(cats, list) or not cats or not all(isinstance(c, str) for c in cats):
                raise ModelArtifactError(f"{where}: categorical feature {f['name']!r} needs a non-empty list "
                                         "of string categories.")
            if len(set(cats)) != len(cats):
                raise ModelArtifactError(f"{where}: categorical feature {f['name']!r} repeats categories.")
            if f.get("values", "text") not in VALUE_KINDS:
                raise _out_of_bounds(name, f"table feature {f['name']!r} values", f["values"],
                                     f"one of {', '.join(VALUE_KINDS)}")
            width += len(cats) + 1  # one column per category and one for an unseen category
        else:
            raise ModelArtifactError(f"{where}: feature {f['name']!r} has kind {kind!r}; expected 'numeric' "
                                     "or 'categorical'.")
    feature_names = [f["name"] for f in features]
    columns = feature_names + table["id_columns"]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ModelArtifactError(f"{where}: column names {repeated} repeat across features and id_columns.")
    both = sorted(set(table["exclude"]) & set(columns))
    if both:
        raise ModelArtifactError(f"{where}: columns {both} are both excluded and used.")
    if width != n_features:
        raise ModelArtifactError(f"{where}: its features encode to {width} input columns (numeric: 1, "
                                 f"categorical: categories + 1); the graph takes n_features={n_features}.")
    if names != feature_names:
        raise ModelArtifactError(f"{where}: feature_names {names} differ from the table's features "
                                 f"{feature_names}.")
    order = table.get("column_order")
    if order is not None and not (_is_str_list(order) and sorted(order) == sorted(feature_names)):
        raise ModelArtifactError(f"{where}: column_order {str(order)[:80]} must name each feature once (in the "
                                 f"order of fit); the features are {feature_names}.")
    if terms is not None and terms != len(features):
        raise ModelArtifactError(f"{where}: {len(features)} features, but n_feature_terms={terms}; expected one "
                                 "feature term per feature (numeric + categorical).")
