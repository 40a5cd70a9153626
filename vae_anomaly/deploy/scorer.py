"""Scorer: a loaded model file plus the decision policy, with onnxruntime and numpy only (the deploy path).

Every entry point (CLI, library, HTTP, Dask, the estimator) scores through this class, so the same
row gets the same score everywhere. Importing this module never imports torch.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputValidationError
from . import artifact
from .calibration import conformal_p_values, warn_if_threshold_flags_most
from .model_file import DEFAULT_CHUNK_ROWS, ModelFile
from .policy import ScoreResult, auto_threshold, decide, nonfinite_scores


class Scorer(ModelFile):
    """A loaded vae-anomaly model: scores, conformal p-values and flags for new rows.

    ``Scorer(model_path, intra_op_threads=None)`` loads and checks the file as
    :class:`~vae_anomaly.deploy.model_file.ModelFile` does (ModelArtifactError, exit code 4, for a
    missing, corrupted, unsafe or incompatible file) and adds the decision policy of
    :mod:`vae_anomaly.deploy.policy`.

    Examples
    --------
    >>> scorer = Scorer("model.onnx")                      # doctest: +SKIP
    >>> result = scorer.predict(X_new)                     # doctest: +SKIP
    >>> result.scores, result.p_values, result.is_anomaly  # doctest: +SKIP
    """

    def p_values(self, scores: np.ndarray, *, score: str | None = None) -> np.ndarray:
        """Conformal p-values of scores against the model's calibration scores (float64, (n,))."""
        return conformal_p_values(scores, self.calibration[self.resolve_score(score)])

    def threshold(self, *, score: str | None = None, alpha: float | None = None) -> float:
        """The score threshold of ``--threshold auto``: flag a row when its score is greater.

        With ``alpha`` given, or when the model stores no other rule: the conformal threshold,
        score > threshold ⇔ p-value <= alpha. A model recalibrated for F1 or a target recall on
        labelled data (``vae-anomaly calibrate --target``) stores that threshold instead, used when
        ``alpha`` is None.
        """
        score = self.resolve_score(score)
        return self._auto_threshold(score, alpha)[0]

    def _auto_threshold(self, score: str, alpha: float | None) -> tuple[float, float | None]:
        return auto_threshold(self.calibration[score], score=score, alpha=alpha, model_alpha=self.alpha,
                              rule=self.metadata.get("auto_threshold"))

    def predict(self, X, *, score: str | None = None, threshold: str | float = "auto",
                alpha: float | None = None, name: str = "X", nan_policy: str = "raise",
                fdr: float | None = None, feature_terms: bool = False, condition=None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ScoreResult:
        """Score rows, compute their conformal p-values and flag anomalies.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features), or a table (pandas DataFrame, pyarrow Table, list
            of {column: value} records) matched by name (see :meth:`score_samples`).
        score : score type; None = the model's default.
        threshold : "auto" flags rows whose conformal p-value <= alpha (false-alarm rate <= alpha on
            normal rows exchangeable with the calibration rows); a float flags score > threshold.
        alpha : overrides the model's stored alpha for ``threshold="auto"``.
        nan_policy : "raise" refuses NaN/±inf values and missing cells; "flag" scores the other rows
            and reports each row holding one as anomalous (score +inf, p-value 0, is_anomaly True),
            never normal. Under either, a finite row whose score is not finite (values far outside
            the training range overflow float32) is reported the same way, with a warning
            (:func:`~vae_anomaly.deploy.policy.nonfinite_scores`).
        fdr : if given, flag by Benjamini–Hochberg over this batch's p-values at this false
            discovery rate instead of by threshold (``threshold`` is then NaN in the result); rows
            flagged for NaN/inf/missing values are left out of BH's count.
        feature_terms : also return the per-feature terms, from the same run of the graph.
        condition : a conditional model's conditions, one per row (see :meth:`score_samples`).

        Returns
        -------
        ScoreResult

        Raises
        ------
        InputValidationError : bad X, unknown score, alpha outside (0, 1), a NaN threshold, unknown
            nan_policy.
        """
        score = self.resolve_score(score)
        if nan_policy not in ("raise", "flag"):
            raise InputValidationError(f"nan_policy: got {nan_policy!r}; expected 'raise' or 'flag'.")
        x, c = self.rows(X, name, condition, allow_nonfinite=nan_policy == "flag")
        # a masked model scores NaN (a missing value) itself; only ±inf is a bad row there
        bad = np.isinf(x).any(axis=1) if self.masked else ~np.isfinite(x).all(axis=1)
        scores = np.full(x.shape[0], np.inf, dtype=np.float32)
        good = x[~bad] if bad.any() else x
        good_c = c[~bad] if c is not None and bad.any() else c
        outputs = [artifact.SCORE_OUTPUTS[score]] + ([artifact.FEATURE_TERMS_OUTPUT] if feature_terms else [])
        ran = self.run(good, outputs, chunk_rows, good_c)
        overflow = nonfinite_scores(ran[0], name=name, score=score)
        scores[~bad] = ran[0]
        terms = None
        if feature_terms:
            terms = np.where(np.isinf(x[:, self.term_starts()]) if self.masked else ~np.isfinite(x[:, self.term_starts()]),
                             np.float32(np.inf), np.float32(0))
            terms[~bad] = np.where(np.isfinite(ran[1]), ran[1], np.float32(np.inf))
        bad[~bad] = overflow
        if threshold == "auto":
            t, alpha = self._auto_threshold(score, alpha)
        else:
            t, alpha = float(threshold), None
            if np.isnan(t):
                raise InputValidationError("threshold: got NaN; expected 'auto' or a score in nats (a NaN "
                                           "threshold would flag nothing).")
            if fdr is None:  # under fdr the threshold is not used
                warn_if_threshold_flags_most(t, self.calibration[score], score)
        return decide(scores, bad, self.calibration[score], threshold=t, alpha=alpha, score=score, fdr=fdr,
                      feature_terms=terms)
