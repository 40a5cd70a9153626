"""Shared fixtures: a small model fitted once per session on bundled real data (cardio)."""

from __future__ import annotations

import numpy as np
import pytest

from vae_anomaly.evaluation.datasets import (
    bundled_path,
    load_labelled,
    semi_supervised_split,
)


@pytest.fixture(scope="session")
def cardio():
    """(X_train_normal, X_test, y_test) of the bundled cardio data, seed-0 protocol split."""
    X, y = load_labelled(bundled_path("cardio"))
    tr, te = semi_supervised_split(y, seed=0)
    return X[tr], X[te], y[te]


@pytest.fixture(scope="session")
def trained(cardio):
    """A TrainResult fitted briefly on cardio's normal rows."""
    pytest.importorskip("torch")
    from vae_anomaly.training.train import TrainConfig, train

    return train(cardio[0], config=TrainConfig(epochs=40, seed=0))


@pytest.fixture(scope="session")
def model_path(trained, tmp_path_factory):
    """Path of the exported model.onnx of ``trained``."""
    from vae_anomaly.training.export import export_model

    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_model(trained, path, alpha=0.05)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
