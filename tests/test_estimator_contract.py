"""The scikit-learn estimator's contract (docs/python.md, "The scikit-learn estimator"): a float
contamination flags that share of the rows, a reloaded estimator honours ``load(contamination=…)``
and reads arrays in the column order of fit."""

from __future__ import annotations

import numpy as np
import pytest

from vae_anomaly import Scorer
from vae_anomaly.errors import InputValidationError

pytest.importorskip("torch")
pytest.importorskip("sklearn")


def _small(**params):
    """A small estimator (3 epochs, two layers of 16); alpha 0.05 unless given."""
    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    return VAEAnomalyDetector(**{"epochs": 3, "hidden": (16, 16), "device": "cpu", "alpha": 0.05, **params})


@pytest.mark.parametrize("contamination", [0.05, 0.1, 0.3])
def test_a_float_contamination_predicts_that_share_of_the_training_rows_an_outlier(cardio, contamination):
    X = cardio[0][:300]
    det = _small(contamination=contamination).fit(X)
    # scikit-learn's convention: offset_ is the contamination percentile of score_samples (higher = more normal)
    assert det.offset_ == pytest.approx(np.percentile(det.score_samples(X), 100 * contamination))
    share = np.mean(det.predict(X) == -1)
    assert abs(share - contamination) <= 1 / len(X), share
    np.testing.assert_array_equal(det.decision_function(X), det.score_samples(X) - det.offset_)


@pytest.mark.parametrize("contamination", [0.05, 0.1, 0.3])
def test_load_honours_a_float_contamination_on_the_calibration_rows(model_path, contamination):
    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    loaded = VAEAnomalyDetector.load(model_path, contamination=contamination)
    assert loaded.get_params()["contamination"] == contamination
    calibration = Scorer(model_path).calibration[loaded.score_type]  # the held-out rows' scores, as stored
    share = np.mean(-calibration - loaded.offset_ < 0)               # decision_function < 0 on those rows
    assert abs(share - contamination) <= 1 / calibration.size, share
    auto = VAEAnomalyDetector.load(model_path)
    assert auto.contamination == "auto" and auto.offset_ == -Scorer(model_path).threshold()


@pytest.mark.parametrize("contamination", [0.0, 0.7, "0.1", True])
def test_load_refuses_a_contamination_fit_would_refuse(model_path, contamination):
    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    with pytest.raises(InputValidationError, match=r"contamination: got .*; expected 'auto' or a float in \(0, 0\.5\]"):
        VAEAnomalyDetector.load(model_path, contamination=contamination)


def test_a_reloaded_categorical_estimator_reads_arrays_in_the_column_order_of_fit(tmp_path, mixed_frame):
    from vae_anomaly.integrations.estimator import VAEAnomalyDetector

    order = ["proto", "a", "flag", "b"]  # categorical and numeric columns interleaved: not the model's order
    det = _small().fit(mixed_frame(240, 0)[order])
    det.save(tmp_path / "mixed.onnx")
    loaded = VAEAnomalyDetector.load(tmp_path / "mixed.onnx")
    assert loaded.feature_names_in_.tolist() == order and loaded.n_features_in_ == 4
    new = mixed_frame(50, 1)
    rows = new[order].to_numpy()  # an array of the columns in the order of fit
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        expected = det.score_samples(rows)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(loaded.score_samples(rows), expected)
    np.testing.assert_array_equal(loaded.score_samples(new[order[::-1]]), expected)  # a frame: by name


def test_fit_refuses_an_empty_signing_key_before_training(cardio, monkeypatch):
    from vae_anomaly.deploy import artifact
    from vae_anomaly.training import train

    monkeypatch.setenv(artifact.KEY_ENV, "")
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained with an empty key"))
    with pytest.raises(InputValidationError, match=f"{artifact.KEY_ENV}: set but empty"):
        _small().fit(cardio[0][:50])
