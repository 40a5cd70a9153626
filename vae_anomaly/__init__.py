"""vae-anomaly: a variational autoencoder anomaly detector exported to one ONNX file.

Importing this package never imports torch: :class:`Scorer` needs numpy and onnxruntime only.
Training lives in :mod:`vae_anomaly.training.train` and :mod:`vae_anomaly.training.export` (extra ``[train]``).
"""

__version__ = "0.1.0"

from .errors import (InputValidationError, ModelArtifactError, OutputWriteError, TrainingError,
                     VaeAnomalyError)
from .deploy.scorer import Scorer, ScoreResult

__all__ = [
    "Scorer", "ScoreResult", "VaeAnomalyError", "InputValidationError", "ModelArtifactError",
    "OutputWriteError", "TrainingError", "__version__",
]
