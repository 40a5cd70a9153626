"""vae-anomaly: a variational autoencoder anomaly detector exported to one ONNX file.

The public API, importable without torch::

    from vae_anomaly import Scorer, ScoreResult, score_file          # numpy + onnxruntime
    from vae_anomaly import fit_file, TrainConfig, VAEAnomalyDetector

``fit_file`` and ``VAEAnomalyDetector.fit`` train, so they need the ``[train]`` extra (torch) when
called; the names themselves are resolved lazily, so importing them never imports torch. The
layout (deploy/, training/, integrations/, evaluation/) and its import rule: docs/design.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .deploy.batch import sample_file, score_file
from .deploy.policy import ScoreResult
from .deploy.scorer import Scorer
from .errors import (
    InputValidationError,
    ModelArtifactError,
    OutputWriteError,
    TrainingError,
    VaeAnomalyError,
)

#: public names defined outside the deploy side, imported on first use: name -> module
_LAZY = {
    "fit_file": "vae_anomaly.training.fit",
    "TrainConfig": "vae_anomaly.training.config",
    "VAEAnomalyDetector": "vae_anomaly.integrations.estimator",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vae_anomaly' has no attribute {name!r}")


__all__ = [
    "Scorer", "ScoreResult", "score_file", "sample_file", "fit_file", "TrainConfig", "VAEAnomalyDetector",
    "VaeAnomalyError", "InputValidationError", "ModelArtifactError", "OutputWriteError", "TrainingError",
    "__version__",
]
