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
(:func:`model_checksum`, :func:`seal`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelArtifactError
from . import onnx_proto

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
NOISE_INPUT, SAMPLE_OUTPUT = "noise", "sample"
MAX_MODEL_BYTES = 512 * 1024 * 1024
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
    _verify_checksum(model, props.get(CHECKSUM_KEY), name)
    return model, meta


def model_checksum(model) -> str:
    """SHA-256 (hex) of ``model`` (a ModelProto) serialized without its :data:`CHECKSUM_KEY` entry.

    Everything else is covered: the graph and its weights, the producer, every other
    ``metadata_props`` entry (the JSON metadata, the generation graph). Protobuf writes a message's
    fields in field-number order, so serializing the same message gives the same bytes; the writer
    checks this by loading what it wrote. ``model`` is left as it was.
    """
    entries = model.metadata_props
    if not any(p.key == CHECKSUM_KEY for p in entries):
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    if entries[-1].key == CHECKSUM_KEY and sum(p.key == CHECKSUM_KEY for p in entries) == 1:
        last = entries.pop()  # where seal() puts it; cheaper than copying every entry (1 ms on 2 MB)
        try:
            return hashlib.sha256(model.SerializeToString()).hexdigest()
        finally:
            entries.append(last)
    props = list(entries)
    keep = [p for p in props if p.key != CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    try:
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    finally:
        del model.metadata_props[:]
        model.metadata_props.extend(props)


def seal(model) -> None:
    """Set ``model``'s :data:`CHECKSUM_KEY` entry (the last ``metadata_props`` entry) to its checksum."""
    keep = [p for p in model.metadata_props if p.key != CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    digest = model_checksum(model)
    model.metadata_props.add(key=CHECKSUM_KEY, value=digest)


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
    """Check the metadata's schema version, required keys, scores and calibration, and the optional
    ``table`` / ``feature_names`` / ``n_feature_terms`` entries.

    Raises
    ------
    ModelArtifactError
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
    unknown = [s for s in meta["score_names"] if s not in SCORE_OUTPUTS]
    if unknown or meta["default_score"] not in meta["score_names"]:
        raise ModelArtifactError(f"{name}: metadata names unknown scores {unknown or meta['default_score']}.")
    for s in meta["score_names"]:
        cal = np.asarray(meta["calibration"].get(s, []), dtype=np.float64)
        if cal.ndim != 1 or cal.size == 0 or np.any(np.diff(cal) < 0):
            raise ModelArtifactError(f"{name}: calibration scores for {s!r} missing or not sorted.")
    _check_columns(meta, name)
    _check_series(meta, name)


def _check_series(meta: dict, name: str) -> None:
    """Check the optional ``series`` entry of a window model (docs/model-file.md): W >= 2, a time
    column, a positive step, metrics and ID columns, n_features = W × metrics, a masked graph."""
    spec = meta.get("series")
    if spec is None:
        return
    where = f"{name}: metadata series"
    ok = (isinstance(spec, dict) and isinstance(spec.get("window"), int) and spec["window"] >= 2
          and isinstance(spec.get("time_column"), str) and isinstance(spec.get("step_seconds"), (int, float))
          and spec["step_seconds"] > 0 and _is_str_list(spec.get("metrics")) and spec["metrics"]
          and _is_str_list(spec.get("id_columns")) and spec["id_columns"][:1] == [spec["time_column"]])
    if not ok:
        raise ModelArtifactError(f"{where} is malformed; expected window >= 2, time_column, step_seconds > 0, "
                                 "metrics and id_columns (the time column first).")
    if spec["window"] * len(spec["metrics"]) != meta["n_features"] or meta.get("missing") != "masked":
        raise ModelArtifactError(f"{where} disagrees with the graph: expected n_features = window × metrics "
                                 f"({spec['window']} × {len(spec['metrics'])}) and a masked graph.")


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _check_columns(meta: dict, name: str) -> None:
    """Check the optional ``table``, ``feature_names`` and ``n_feature_terms`` entries (docs/model-file.md).

    Raises
    ------
    ModelArtifactError
    """
    n_features = meta["n_features"]
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ModelArtifactError(f"{name}: metadata n_features={n_features!r}; expected a positive integer.")
    names = meta.get("feature_names")
    if names is not None and not _is_str_list(names):
        raise ModelArtifactError(f"{name}: metadata feature_names must be null or a list of non-empty strings.")
    terms = meta.get("n_feature_terms")
    if terms is not None and (isinstance(terms, bool) or not isinstance(terms, int) or terms < 1):
        raise ModelArtifactError(f"{name}: metadata n_feature_terms={terms!r}; expected a positive integer.")
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
    if terms is not None and terms != len(features):
        raise ModelArtifactError(f"{where}: {len(features)} features, but n_feature_terms={terms}; expected one "
                                 "feature term per feature (numeric + categorical).")
