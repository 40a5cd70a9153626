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
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelArtifactError

METADATA_KEY = "vae_anomaly"
SCHEMA_VERSION = 1
INPUT_NAME = "x"
#: CLI score name -> graph output name. The first is the default unless the metadata says otherwise.
SCORE_OUTPUTS = {"neg-elbo": "neg_elbo", "recon-prob": "recon_prob", "iwae": "iwae"}
FEATURE_TERMS_OUTPUT = "feature_terms"
LATENT_OUTPUT = "latent_mean"
CONDITION_NAME = "condition"
SAMPLER_KEY = "vae_anomaly.sampler"
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
    return model, meta


def _load_self_contained(data: bytes, name: str):
    """The ModelProto in ``data``, refusing anything but a self-contained ONNX protobuf."""
    import onnx  # the protobuf bindings; no torch

    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # protobuf raises its own DecodeError and sometimes RuntimeError
        raise ModelArtifactError(
            f"{name}: not a valid ONNX model (protobuf parsing failed); the file is corrupted or "
            "truncated. Re-create it with 'vae-anomaly fit'."
        ) from None
    for g in [model.graph, *model.functions]:
        for t in _iter_tensors(g):
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
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
    ``sampler``, when given; other metadata entries are kept); it must pass :func:`parse_model`.

    Raises
    ------
    ModelArtifactError : the result would not load.
    """
    import onnx

    model = onnx.load_model_from_string(data)
    model.producer_name, model.producer_version = "vae-anomaly", producer_version
    props = {p.key: p.value for p in model.metadata_props}  # a recalibrated model keeps its sampler
    props[METADATA_KEY] = json.dumps(meta)
    if sampler is not None:
        props[SAMPLER_KEY] = base64.b64encode(sampler).decode("ascii")
    onnx.helper.set_model_props(model, props)
    final = model.SerializeToString()
    parse_model(final, name)
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
    """Check the metadata's schema version and required keys.

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
