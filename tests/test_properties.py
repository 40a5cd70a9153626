"""Hypothesis property tests: the input gate and the scorer's invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vae_anomaly import Scorer
from vae_anomaly.deploy.validation import check_array
from vae_anomaly.errors import InputValidationError

any_dtype = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                      hnp.floating_dtypes(), hnp.complex_number_dtypes(), hnp.datetime64_dtypes(),
                      hnp.unicode_string_dtypes(), hnp.byte_string_dtypes())


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(any_dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
       st.none() | st.integers(1, 6))
def test_any_array_validates_to_float32_matrix_or_raises_our_error(arr, n_features):
    try:
        out = check_array(arr, n_features=n_features)
    except InputValidationError:
        return
    assert out.dtype == np.float32 and out.ndim == 2 and out.flags.c_contiguous
    assert np.isfinite(out).all()
    assert n_features is None or out.shape[1] == n_features


VARIANTS = {
    "float32": lambda a: a.astype(np.float32),
    "int64": lambda a: a.astype(np.int64),
    "int16": lambda a: a.astype(np.int16),
    "float16": lambda a: a.astype(np.float16),
    "big-endian": lambda a: a.astype(">f8"),
    "fortran": np.asfortranarray,
    "non-contiguous": lambda a: np.repeat(a, 2, axis=0)[::2],
}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_scores_are_invariant_to_dtype_layout_and_batch_composition(model_path, data):
    scorer = Scorer(model_path)
    n = data.draw(st.integers(1, 40))
    X = data.draw(hnp.arrays(np.float64, (n, scorer.n_features), elements=st.integers(-60, 60)))
    ref = scorer.score_samples(X)
    for name, variant in VARIANTS.items():
        np.testing.assert_array_equal(scorer.score_samples(variant(X)), ref, err_msg=name)
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=60))
    np.testing.assert_array_equal(scorer.score_samples(X[idx]), ref[idx])


@pytest.mark.parametrize("nan_policy", ["raise", "flag"])
def test_a_nan_row_is_never_reported_normal(model_path, nan_policy):
    scorer = Scorer(model_path)
    X = np.zeros((3, scorer.n_features))
    X[1, 0] = np.nan
    if nan_policy == "raise":
        with pytest.raises(InputValidationError):
            scorer.predict(X, nan_policy=nan_policy)
    else:
        res = scorer.predict(X, nan_policy=nan_policy, threshold=1e30)
        assert res.is_anomaly[1] and not res.is_anomaly[[0, 2]].any()
