"""Export a trained model to one self-contained ONNX file, checked against onnxruntime.

The calibration scores stored in the metadata are computed by onnxruntime on the exported graph,
so they are exactly what :class:`~vae_anomaly.deploy.scorer.Scorer` computes for the same rows.
"""

from __future__ import annotations

import io
import json
import os
import platform
import warnings

import numpy as np
import torch

from .. import __version__
from ..deploy import artifact
from ..deploy.calibration import calibration_entries, check_alpha
from ..deploy.io import atomic_write
from ..deploy.model_file import DEFAULT_CHUNK_ROWS, max_chunk_rows
from ..deploy.series import slot_names
from ..errors import InputValidationError, TrainingError
from .scores import SampleGraph
from .train import TrainResult

OPSET = 18
_OUTPUTS = [*artifact.SCORE_OUTPUTS.values(), artifact.FEATURE_TERMS_OUTPUT, artifact.LATENT_OUTPUT]


def _to_onnx_bytes(graph: torch.nn.Module, inputs: dict[str, int], outputs: list[str]) -> bytes:
    """ONNX export of ``graph`` with 2-D float inputs {name: columns} sharing one dynamic batch axis
    (``n_rows``); every tensor inside the protobuf.

    Uses torch's TorchScript-based exporter (``dynamo=False``): it traces these fixed-shape graphs
    in about 0.1 s, where the torch.export-based one took 3-4 s a graph plus about 5 s of imports on
    first use, most of a small default fit's time (benchmarks/README.md, "Speed and memory"). The
    parity, batch-invariance and chunking tests hold the exported graph to the torch module either way.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch marks this exporter as legacy (DeprecationWarning)
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(torch.zeros(3, m) for m in inputs.values()), buffer, dynamo=False,
                          input_names=list(inputs), output_names=outputs, opset_version=OPSET,
                          dynamic_axes={name: {0: "n_rows"} for name in [*inputs, *outputs]})
    return buffer.getvalue()


def _rows_per_call(graph) -> int:
    """Rows per onnxruntime and torch call in export and calibration: the Scorer's chunk, capped as
    the Scorer caps it for a mixture prior, so memory stays bounded whatever the size of ``--val``."""
    components = 0 if graph.prior is None else int(graph.prior.inv_var.shape[1])
    return min(DEFAULT_CHUNK_ROWS, max_chunk_rows(components, int(graph.eps.shape[0])) or DEFAULT_CHUNK_ROWS)


def _ort_run(data: bytes, feeds: dict[str, np.ndarray], outputs: list[str], step: int) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    out = [sess.run(outputs, {k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
    return [np.concatenate([o[j] for o in out]) for j in range(len(outputs))]


@torch.no_grad()
def _torch_run(graph: torch.nn.Module, feeds: dict[str, np.ndarray], step: int) -> list[np.ndarray]:
    n = len(next(iter(feeds.values())))
    out = [[t.numpy() for t in graph(*(torch.as_tensor(v[i : i + step]) for v in feeds.values()))]
           for i in range(0, n, step)]
    return [np.concatenate([o[j] for o in out]) for j in range(len(out[0]))]


def _check_parity(onnx_out: list[np.ndarray], torch_out: list[np.ndarray], names: list[str], rtol: float) -> None:
    for name, a, b in zip(names, onnx_out, torch_out):
        if not np.allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.abs(b).max()))):
            worst = float(np.max(np.abs(a - b)))
            raise TrainingError(f"export: onnxruntime's {name} differs from torch's by {worst:g}; "
                                "nothing was written. Please report this as a bug.")


def _with_missing_rows(feeds: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The parity check's rows for a masked model: ``feeds`` followed by up to 16 copies of its first
    rows with a seeded half of their entries set to NaN, one with all but one entry NaN, and one
    all NaN (conditions repeated), so torch and onnxruntime are compared on missing values whether
    or not the validation rows hold any."""
    x = feeds[artifact.INPUT_NAME]
    take = np.arange(min(16, len(x)))
    take = np.concatenate([take, take[:1], take[:1]])
    extra = x[take].copy()
    rng = np.random.default_rng(seed)
    extra[:-2][rng.random(extra[:-2].shape) < 0.5] = np.nan
    extra[-2, 1:] = np.nan
    extra[-1] = np.nan
    return {k: np.concatenate([v, extra if k == artifact.INPUT_NAME else v[take]]) for k, v in feeds.items()}


def _sampler_bytes(vae, rtol: float) -> bytes:
    """The generation graph (noise [, condition] -> sample), exported and checked like the scores."""
    k, m = vae.arch.latent_dim, vae.arch.condition_dim
    graph = SampleGraph(vae).eval()
    inputs = {artifact.NOISE_INPUT: k, **({artifact.CONDITION_NAME: m} if m else {})}
    data = _to_onnx_bytes(graph, inputs, [artifact.SAMPLE_OUTPUT])
    rng = np.random.default_rng(0)
    feeds = {artifact.NOISE_INPUT: rng.standard_normal((64, k), dtype=np.float32)}
    if m:
        feeds[artifact.CONDITION_NAME] = np.eye(m, dtype=np.float32)[rng.integers(0, m, 64)]
    with torch.no_grad():
        expected = graph(*(torch.as_tensor(v) for v in feeds.values())).numpy()
    _check_parity(_ort_run(data, feeds, [artifact.SAMPLE_OUTPUT], DEFAULT_CHUNK_ROWS), [expected], [artifact.SAMPLE_OUTPUT], rtol)
    return data


def _plain_json(value, what: str):
    """A plain-JSON copy of ``value`` (metadata entries must survive json.dumps without NaN).

    Raises
    ------
    InputValidationError : ``value`` is not plain JSON.
    """
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InputValidationError(f"{what}: not a plain-JSON dict ({e}).") from None


def check_table(table: dict | None, arch) -> dict | None:
    """``table`` as a plain-JSON copy, checked against the architecture: its numeric features
    number n_numeric, its categorical ones (after them) have the architecture's category counts.

    Raises
    ------
    InputValidationError : not plain JSON, a malformed feature, or sizes that differ from the model's.
    """
    if table is None:
        return None
    table = _plain_json(table, "table")
    features = table.get("features") if isinstance(table, dict) else None
    if not isinstance(features, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and f.get("kind") in ("numeric", "categorical")
            and (f["kind"] == "numeric" or isinstance(f.get("categories"), list)) for f in features):
        raise InputValidationError('table: expected {"features": [{"name": str, "kind": "numeric"} | {"name": '
                                   'str, "kind": "categorical", "categories": [str, ...]}, ...], ...}.')
    kinds = [f["kind"] for f in features]
    n_num = kinds.count("numeric")
    sizes = tuple(len(f["categories"]) for f in features if f["kind"] == "categorical")
    if kinds != ["numeric"] * n_num + ["categorical"] * len(sizes) or n_num != arch.n_numeric \
            or sizes != tuple(arch.categories):
        raise InputValidationError(
            f"table: {n_num} numeric and categorical features of {list(sizes)} categories (numeric first "
            f"expected); the model has {arch.n_numeric} numeric columns and categories {list(arch.categories)}.")
    return table


def _feature_names(table: dict | None, series: dict | None) -> list[str] | None:
    """The per-feature terms' names: a table's features, a window's ``metric@t-k`` slots, or None."""
    if table is not None:
        return [f["name"] for f in table["features"]]
    if series is not None:
        return slot_names(series["metrics"], series["window"])
    return None


def _check_series(series: dict | None, arch) -> dict | None:
    """``series`` as a plain-JSON copy, for a masked model only (its structure is checked on
    loading, by :func:`vae_anomaly.deploy.artifact.check_metadata`).

    Raises
    ------
    InputValidationError : not a plain-JSON dict, or a model fitted without ``missing=True``.
    """
    if series is None:
        return None
    series = _plain_json(series, "series")
    if not isinstance(series, dict) or not arch.masked:
        raise InputValidationError("series: expected a dict, for a model fitted with missing=True (windows "
                                   "take missing values).")
    return series


def export_model(result: TrainResult, path: str | os.PathLike, *, alpha: float = 0.01,
                 default_score: str = "neg-elbo", rtol: float = 1e-3, table: dict | None = None,
                 series: dict | None = None) -> dict:
    """Write ``result`` as a self-contained ONNX model with metadata; return the metadata.

    See :func:`build_model` for the parameters; ``path`` is written atomically (an existing file
    is replaced only by a complete, checked model).

    Raises
    ------
    TrainingError : onnxruntime's scores disagree with torch's (nothing is written).
    OutputWriteError : the destination cannot be written.
    """
    data, meta = build_model(result, alpha=alpha, default_score=default_score, rtol=rtol, name=str(path),
                             table=table, series=series)
    with atomic_write(path) as f:
        f.write(data)
    return meta


def build_model(result: TrainResult, *, alpha: float = 0.01, default_score: str = "neg-elbo",
                rtol: float = 1e-3, name: str = "model", table: dict | None = None,
                series: dict | None = None) -> tuple[bytes, dict]:
    """The model file's bytes and metadata for ``result``: ONNX graph, parity check, calibration.

    Parameters
    ----------
    result : the output of :func:`vae_anomaly.training.train.train`.
    alpha : false-alarm rate of ``--threshold auto`` stored in the model.
    default_score : the score used when none is named.
    rtol : relative tolerance of the torch vs onnxruntime parity check.
    name : how the model is named in errors.
    table : the table encoding of the columns, a plain-JSON dict ``{"features": [{"name": str,
        "kind": "numeric"} | {"name": str, "kind": "categorical", "categories": [str, ...]}, ...],
        "id_columns": [...], "exclude": [...]}`` with the numeric features first and the
        categorical ones in block order (their category counts must equal the architecture's
        ``categories``), and optionally ``"column_order"``: the features' names in the order of the
        fitted DataFrame's columns (the scikit-learn estimator's); stored as metadata ``"table"``,
        with ``"feature_names"`` = the features' names (both None without a table).
    series : a metric-series window model's spec (:mod:`vae_anomaly.deploy.series`), a plain-JSON
        dict stored as metadata ``"series"`` (absent when None); needs a masked model.

    The file is sealed with its checksum, and signed when the environment variable
    ``VAE_ANOMALY_MODEL_KEY`` holds a key (:func:`vae_anomaly.deploy.artifact.seal`). The metadata
    also records ``"n_feature_terms"``, the width of the ``feature_terms`` output:
    n_numeric + C (n_features for an all-numeric model), and for a model fitted with missing
    values (``Architecture.masked``) ``"missing": "masked"``: its graph takes NaN entries and
    leaves them out of the likelihood (absent for other models). Such a model's parity check also
    runs on rows with missing values (:func:`_with_missing_rows`); its calibration scores are the
    validation rows' as they are, NaN included.

    Raises
    ------
    TrainingError : onnxruntime's scores disagree with torch's.
    InputValidationError : a ``table`` that does not describe the model's columns, a ``series``
        that is not plain JSON or belongs to a model without missing values, an empty
        ``VAE_ANOMALY_MODEL_KEY``.
    ModelArtifactError : metadata out of the loader's bounds (e.g. a series step under 1 ms).
    """
    alpha = check_alpha(alpha)
    arch = result.graph.vae.arch
    table = check_table(table, arch)
    series = _check_series(series, arch)
    graph, x_val, c_val = result.graph.eval(), result.x_val, result.c_val
    n_features = x_val.shape[1]
    feeds = {artifact.INPUT_NAME: x_val, **({} if c_val is None else {artifact.CONDITION_NAME: c_val})}
    data = _to_onnx_bytes(graph, {k: v.shape[1] for k, v in feeds.items()}, _OUTPUTS)

    step = _rows_per_call(graph)
    if arch.masked:  # the parity rows include missing values; the calibration rows are x_val as it is
        n_val, seed = len(x_val), result.summary["config"]["seed"]
        ort_all = _ort_run(data, _with_missing_rows(feeds, seed), _OUTPUTS, step)
        nan_outputs = [name for name, o in zip(_OUTPUTS, ort_all) if np.isnan(o).any()]
        if nan_outputs:
            raise TrainingError(f"export: onnxruntime's {nan_outputs} hold NaN for rows with missing values; "
                                "nothing was written. Please report this as a bug.")
        _check_parity(ort_all, _torch_run(graph, _with_missing_rows(feeds, seed), step), _OUTPUTS, rtol)
        ort_out = [o[:n_val] for o in ort_all]
    else:
        ort_out = _ort_run(data, feeds, _OUTPUTS, step)
        _check_parity(ort_out, _torch_run(graph, feeds, step), _OUTPUTS, rtol)

    calibration = calibration_entries({s: ort_out[i] for i, s in enumerate(artifact.SCORE_OUTPUTS)}, alpha,
                                      seed=result.summary["config"]["seed"])
    import onnx
    import onnxruntime

    meta = {
        "schema_version": artifact.SCHEMA_VERSION,
        "library_version": __version__,
        "n_features": int(n_features),
        "feature_mean": graph.vae.loc.tolist(),
        "feature_std": graph.vae.scale.tolist(),
        "feature_names": _feature_names(table, series),
        "table": table,
        "n_feature_terms": int(arch.n_columns),
        **({"missing": "masked"} if arch.masked else {}),
        **({"series": series} if series is not None else {}),
        "input_name": artifact.INPUT_NAME,
        "input_shape": result.summary["input_shape"],
        "condition": result.summary["condition"],
        "latent_dim": int(graph.vae.arch.latent_dim),
        "outputs": dict(artifact.SCORE_OUTPUTS, feature_terms=artifact.FEATURE_TERMS_OUTPUT,
                        latent_mean=artifact.LATENT_OUTPUT),
        "score_names": list(artifact.SCORE_OUTPUTS),
        "default_score": default_score,
        "score_direction": "higher = more anomalous",
        **calibration,
        "training": {
            **result.summary,
            "versions": {"vae_anomaly": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        },
    }
    return artifact.attach_metadata(data, meta, __version__, name, sampler=_sampler_bytes(graph.vae, rtol)), meta
