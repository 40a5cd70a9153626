"""The exception hierarchy and the exit code each class maps to (docs/reliability.md, "Errors and exit codes").

Every error the library raises on purpose is a :class:`VaeAnomalyError`. Messages follow
scikit-learn's pattern: name the input, say what was expected, what was found, and the fix.
The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``.
"""

from __future__ import annotations


class VaeAnomalyError(Exception):
    """Base class of every error raised on purpose by vae-anomaly (exit code 1)."""

    exit_code = 1


class InputValidationError(VaeAnomalyError, ValueError):
    """Input data is missing, unreadable, of the wrong shape or holds non-finite values (exit 3)."""

    exit_code = 3


class ModelArtifactError(VaeAnomalyError):
    """A model file is missing, corrupted, unsafe or incompatible with this version (exit 4)."""

    exit_code = 4


class OutputWriteError(VaeAnomalyError):
    """An output file cannot be written; nothing was left at the output path (exit 5)."""

    exit_code = 5


class TrainingError(VaeAnomalyError):
    """Training cannot start or diverged (NaN/inf loss); no model was written (exit 1)."""

    exit_code = 1
