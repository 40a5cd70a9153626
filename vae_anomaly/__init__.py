"""vae-anomaly: a variational autoencoder anomaly detector exported to one ONNX file.

Importing this package never imports torch: :class:`Scorer` needs numpy and onnxruntime only.
Training lives in :mod:`vae_anomaly.train` and :mod:`vae_anomaly.export` (extra ``[train]``).
"""

from .errors import (InputValidationError, ModelArtifactError, OutputWriteError, TrainingError,
                     VaeAnomalyError)
from .scorer import Scorer, ScoreResult

__version__ = "0.1.0"

__all__ = [
    "Scorer", "ScoreResult", "VaeAnomalyError", "InputValidationError", "ModelArtifactError",
    "OutputWriteError", "TrainingError", "__version__",
]
