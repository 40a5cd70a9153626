"""A loaded model file: its metadata, its onnxruntime sessions, and running its graph (no torch).

:class:`ModelFile` checks rows against the model, runs the score, per-feature, latent and
generation graphs in chunks and returns raw outputs. What a score *means* (p-values, thresholds,
flags) is the decision policy, :mod:`vae_anomaly.deploy.policy`, which
:class:`~vae_anomaly.deploy.scorer.Scorer` adds on top.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputValidationError, ModelArtifactError
from . import artifact, conditions, onnx_proto, schema, tables
from .policy import nonfinite_scores
from .validation import check_array, column_label, flatten_rows

#: rows per onnxruntime call: small enough that a chunk's intermediates stay in cache (measured
#: 111k rows/s at 1024 vs 82k at 4096 for a 64-feature model decoding 16 samples a row, 2 cores;
#: decoding the posterior mean alone, 256 to 16,384 rows a call scored within noise of each other)
DEFAULT_CHUNK_ROWS = 1024
#: elements of a chunk's (rows, L, M) tensor of latent-prior terms, at most: a model whose prior is
#: the aggregate posterior of M training rows is run on fewer rows per call (4 MB intermediates)
PRIOR_CHUNK_ELEMENTS = 2**20


def max_chunk_rows(components: int, samples: int) -> int | None:
    """The most rows per graph call for a model whose latent prior is a mixture of ``components``
    Gaussians scored at ``samples`` latent samples (L): the (rows, L, M) tensor of prior terms stays
    within PRIOR_CHUNK_ELEMENTS (4 MB); None (no cap) for a model without a mixture prior (0)."""
    return max(1, PRIOR_CHUNK_ELEMENTS // (components * samples)) if components else None


class ModelFile:
    """A loaded vae-anomaly model file: metadata, sessions, and the graph's raw outputs for rows.

    Parameters
    ----------
    model_path : path to a ``model.onnx`` written by ``vae-anomaly fit``.
    intra_op_threads : onnxruntime intra-op threads; None lets onnxruntime choose.

    Raises
    ------
    ModelArtifactError
        Missing, corrupted, unsafe (external data) or incompatible model file (exit code 4).
    """

    def __init__(self, model_path: str | os.PathLike = "model.onnx", *, intra_op_threads: int | None = None):
        self.path = Path(model_path)
        self._load(artifact.read_model_bytes(self.path), str(self.path), intra_op_threads)

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "model", intra_op_threads: int | None = None):
        """An instance from the bytes of a model file (same checks as loading the file)."""
        scorer = cls.__new__(cls)
        scorer.path = Path(name)
        scorer._load(data, name, intra_op_threads)
        return scorer

    def _load(self, data: bytes, name: str, intra_op_threads: int | None) -> None:
        self._graph, self.metadata = artifact.parse_model(data, name)
        #: the first 16 hex digits of the model file's SHA-256: which model answered
        self.model_id = hashlib.sha256(data).hexdigest()[:16]
        self._name, self._threads = name, intra_op_threads
        training = self.metadata.get("training", {})
        components = training.get("latent_prior", {}).get("components", 0)
        samples = training.get("config", {}).get("n_samples", 1)
        self._max_chunk_rows = max_chunk_rows(components, samples)
        self._sessions: dict[tuple[str, ...], object] = {}
        #: per score name, the sorted calibration scores (float64) of the conformal p-values
        self.calibration = {
            s: np.asarray(self.metadata["calibration"][s], dtype=np.float64) for s in self.score_names
        }
        self._session([artifact.SCORE_OUTPUTS[self.default_score]])  # a graph onnxruntime refuses fails here

    def _session(self, outputs: list[str]):
        """The onnxruntime session of the graph pruned to ``outputs``, created on first use.

        onnxruntime runs every node of a graph whatever outputs a call asks for, so a score-only
        call on the whole graph would also pay for the per-feature terms (measured: 10% of the
        time); each output set gets a session holding only the nodes it needs.
        """
        key = tuple(outputs)
        if key not in self._sessions:
            import onnxruntime as ort

            if key == (artifact.SAMPLE_OUTPUT,):
                pruned = artifact.sampler_model(self._graph, self._name)
            else:
                pruned = onnx_proto.prune(self._graph, list(key))
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self._threads is not None:
                options.intra_op_num_threads = int(self._threads)
            try:
                self._sessions[key] = ort.InferenceSession(pruned.SerializeToString(), options,
                                                           providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own pybind exception types
                raise ModelArtifactError(
                    f"{self._name}: onnxruntime cannot load the graph ({str(e).splitlines()[0][:200]})."
                ) from None
        return self._sessions[key]

    @property
    def n_features(self) -> int:
        """Number of input columns the model expects (an image's pixels, flattened)."""
        return int(self.metadata["n_features"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input row as fitted: (n_features,), or (H, W) / (C, H, W) for images."""
        return tuple(self.metadata.get("input_shape") or (self.n_features,))

    @property
    def condition(self) -> dict | None:
        """The condition spec of a conditional model (see :mod:`vae_anomaly.deploy.conditions`), else None."""
        return self.metadata.get("condition")

    @property
    def table(self) -> dict | None:
        """The table schema of a model fitted on a table (:mod:`vae_anomaly.deploy.schema`), else None
        (a positional model: columns are taken by position)."""
        return self.metadata.get("table")

    @property
    def series(self) -> dict | None:
        """The ``series`` entry of a window model (:mod:`vae_anomaly.deploy.series`), else None."""
        return self.metadata.get("series")

    @property
    def masked(self) -> bool:
        """Whether the graph takes missing values (NaN) and leaves them out of the likelihood."""
        return self.metadata.get("missing") == "masked"

    @property
    def feature_names(self) -> list[str] | None:
        """The name of each per-feature term (one per original column), or None for a positional model."""
        return self.metadata.get("feature_names")

    @functools.cached_property
    def input_names(self) -> list[str] | None:
        """A name for each column of the graph's input (n_features of them): a table's columns, a
        categorical column's one-hot slots as ``name=category``, a window's ``metric@t-k``; None for a
        model fitted on an unnamed matrix (columns by position). Built once per loaded model: every
        chunk's check names its columns with it."""
        if self.table:
            return schema.slot_names(self.table)
        names = self.feature_names
        return names if names is not None and len(names) == self.n_features else None

    @property
    def n_feature_terms(self) -> int:
        """Per-feature terms per row: one per numeric column and one per categorical column."""
        return int(self.metadata.get("n_feature_terms", self.n_features))

    def term_starts(self) -> np.ndarray:
        """For each per-feature term, its first column in the graph's input (a categorical block's
        first slot, which is NaN exactly when the value is missing); int64 (n_feature_terms,)."""
        return schema.term_starts(self.table) if self.table else np.arange(self.n_features)

    def check_rows(self, X, *, name: str = "X", allow_nonfinite: bool = False, first_row: int = 0,
                   min_rows: int = 0) -> np.ndarray:
        """Rows this model can score: float32, C-ordered, shape (n_rows, n_features); images given as
        (n_rows, *input_shape) are flattened. The other arguments are those of
        :func:`~vae_anomaly.deploy.validation.check_array`.

        A table (pandas DataFrame, pyarrow Table, list of {column: value} records) is encoded
        first (:meth:`encode_table`).

        Raises
        ------
        InputValidationError : not numeric, wrong shape or column count, NaN/inf (unless allowed);
            for a table, a missing column or text in a numeric column (named).
        """
        if tables.is_table(X):
            X = self.encode_table(tables.as_table(X, name), name=name, first_row=first_row,
                                  allow_missing=allow_nonfinite)
        else:
            self._check_matrix_width(X, name)
        return check_array(flatten_rows(X, self.input_shape, name=name), name=name, n_features=self.n_features,
                           allow_nonfinite=allow_nonfinite, first_row=first_row, min_rows=min_rows,
                           columns=self.input_names)

    def _check_matrix_width(self, X, name: str) -> None:
        """Refuse, in terms of the table's columns, a matrix given to a model whose table has
        categorical columns: its graph input is their one-hot encoding, which users never write."""
        if not self.table or self.n_feature_terms == self.n_features:
            return
        shape = np.shape(X)
        if len(shape) == 2 and shape[1] != self.n_features:
            names = schema.feature_names(self.table)
            raise InputValidationError(
                f"{name}: rows of {shape[1]} values; the model reads a table of {len(names)} named columns "
                f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}), some of them categorical. Pass a "
                "table (.csv or .parquet file, DataFrame, or {column: value} records) with those columns.")

    def rows(self, X, name: str, condition=None, *, allow_nonfinite: bool = False
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Validated graph inputs: rows float32 (n, n_features) and encoded conditions or None.

        Raises
        ------
        InputValidationError : see :meth:`check_rows`; conditions that do not fit the model.
        """
        x = self.check_rows(X, name=name, allow_nonfinite=allow_nonfinite or self.masked)
        if self.masked and not allow_nonfinite and np.isinf(x).any():
            r, c = np.argwhere(np.isinf(x))[0]
            raise InputValidationError(f"{name}: X holds ±inf (first at row {r}, column "
                                       f"{column_label(c, self.input_names)}); expected finite values "
                                       "or NaN for a missing value.")
        return x, conditions.encode(condition, self.condition, x.shape[0], f"{name} conditions")

    def encode_table(self, table, *, name: str = "X", first_row: int = 0, allow_missing: bool = False) -> np.ndarray:
        """A pyarrow Table's rows as this model's graph input (float64, (n_rows, n_features)):
        columns matched by name (:func:`vae_anomaly.deploy.schema.encode`), or taken by position
        for a positional model.

        Raises
        ------
        InputValidationError : a missing feature column, text in a numeric column, a missing value
            when not allowed (column and row named).
        """
        spec = self.table or schema.positional(table.column_names)
        return schema.encode(table, spec, name=name, first_row=first_row,
                             allow_missing=allow_missing or self.table is None)

    @property
    def score_names(self) -> list[str]:
        """Score types the model provides, e.g. ["neg-elbo", "recon-prob", "iwae"]."""
        return list(self.metadata["score_names"])

    @property
    def default_score(self) -> str:
        """The score used when none is named."""
        return str(self.metadata["default_score"])

    @property
    def alpha(self) -> float:
        """The false-alarm rate stored at fit time for ``threshold="auto"``."""
        return float(self.metadata["alpha"])

    def resolve_score(self, score: str | None) -> str:
        """The score's name (None = the model's default); InputValidationError for one it lacks."""
        score = self.default_score if score is None else score
        if score not in self.score_names:
            raise InputValidationError(
                f"score: got {score!r}; expected one of {', '.join(self.score_names)}."
            )
        return score

    def run(self, x: np.ndarray, outputs: list[str], chunk_rows: int, c: np.ndarray | None = None
            ) -> list[np.ndarray]:
        """The graph's ``outputs`` for validated rows (float32, C-ordered, finite, (n, n_features)) and
        encoded conditions, run ``chunk_rows`` rows at a time; each output float32 with n rows."""
        parts: list[list[np.ndarray]] = [[] for _ in outputs]
        session = self._session(outputs)
        if self._max_chunk_rows is not None:
            chunk_rows = min(chunk_rows, self._max_chunk_rows)
        for start in range(0, x.shape[0], chunk_rows):
            feeds = {artifact.INPUT_NAME: x[start : start + chunk_rows]}
            if c is not None:
                feeds[artifact.CONDITION_NAME] = c[start : start + chunk_rows]
            res = session.run(outputs, feeds)
            for acc, r in zip(parts, res):
                acc.append(r)
        shapes = {artifact.FEATURE_TERMS_OUTPUT: (0, self.n_feature_terms),
                  artifact.LATENT_OUTPUT: (0, int(self.metadata.get("latent_dim", 0)))}
        return [
            np.concatenate(acc) if acc else np.empty(shapes.get(o, (0,)), dtype=np.float32)
            for acc, o in zip(parts, outputs)
        ]

    def score_samples(self, X, *, score: str | None = None, name: str = "X", condition=None,
                      chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
        """Anomaly scores, higher = more anomalous.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features), raw features (any numeric dtype); an image
            model also takes (n_rows, *input_shape); or a table (pandas DataFrame, pyarrow Table,
            list of {column: value} records), columns matched by name for a model fitted on a table.
        score : "neg-elbo", "recon-prob" or "iwae"; None = the model's default.
        condition : a conditional model's conditions, one per row (ids (n,), one-hot (n, K) or
            numeric (n, m)); must be None for an unconditional model.
        name : how X is named in error messages.
        chunk_rows : rows per onnxruntime call (memory, not results, depends on it); at most
            2²⁰ / (L·M) for a model whose latent prior has M components.

        Returns
        -------
        float32 array, shape (n_rows,), in nats. Each score is a pure function of its row; a score the
        graph cannot compute (NaN or ±inf: values far outside the training range overflow float32)
        is +inf, with a warning (:func:`~vae_anomaly.deploy.policy.nonfinite_scores`).

        Raises
        ------
        InputValidationError : X is not a finite numeric (n_rows, n_features) matrix, or the
            conditions do not fit the model.
        """
        score = self.resolve_score(score)
        x, c = self.rows(X, name, condition)
        scores = self.run(x, [artifact.SCORE_OUTPUTS[score]], chunk_rows, c)[0]
        nonfinite_scores(scores, name=name, score=score)
        return scores

    def feature_terms(self, X, *, name: str = "X", condition=None,
                      chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
        """Per-feature reconstruction terms at the posterior mean z̄ = μ(x): −log N(x_j; μ_j(z̄), σ_j²(z̄))
        + log scale_j for a numeric column, −log p(x_c | z̄) for a categorical one (docs/scores.md).

        Returns float32, shape (n_rows, n_feature_terms) (one per original column; n_features for a
        positional model), in nats; each row sums to its "recon-prob" score. Higher = that feature
        (an image's pixel) is more anomalous.
        """
        x, c = self.rows(X, name, condition)
        return self.run(x, [artifact.FEATURE_TERMS_OUTPUT], chunk_rows, c)[0]

    def latent_means(self, X, *, name: str = "X", condition=None,
                     chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
        """The encoder's means μ(x) of q(z|x[, c]): float32, shape (n_rows, latent_dim).

        Raises
        ------
        ModelArtifactError : a model file written before the graph had this output (re-fit).
        """
        if "latent_dim" not in self.metadata:
            raise ModelArtifactError(f"{self._name}: the model has no latent_mean output; re-fit it with "
                                     "this vae-anomaly.")
        x, c = self.rows(X, name, condition)
        return self.run(x, [artifact.LATENT_OUTPUT], chunk_rows, c)[0]

    def sample(self, n: int, *, condition=None, seed: int = 0) -> np.ndarray:
        """``n`` rows generated from the prior through the decoder (torch-free): decoder means
        μ_x(z) at z ~ p(z|c), on the raw scale, float32, shape (n, *input_shape).

        Raises
        ------
        InputValidationError : n < 0, or conditions that do not fit the model.
        ModelArtifactError : the file holds no generation graph.
        """
        if n < 0:
            raise InputValidationError(f"-n: got {n}; expected a number of rows >= 0.")
        c = conditions.encode(condition, self.condition, n, "sample conditions")
        noise = np.random.default_rng(seed).standard_normal((n, int(self.metadata["latent_dim"])), dtype=np.float32)
        session = self._session([artifact.SAMPLE_OUTPUT])
        feeds = {artifact.NOISE_INPUT: noise, **({} if c is None else {artifact.CONDITION_NAME: c})}
        out = session.run([artifact.SAMPLE_OUTPUT], feeds)[0] if n else np.empty((0, self.n_features), np.float32)
        return out.reshape(n, *self.input_shape)
