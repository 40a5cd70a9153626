"""Fitting from files: the library call behind ``vae-anomaly fit`` (read, train, export, calibrate).

Importing this module does not import torch; calling :func:`fit_file` does.
"""

from __future__ import annotations

import os

from ..deploy.calibration import check_alpha
from ..deploy.io import check_output_folder, read_matrix
from ..errors import InputValidationError
from .config import ProgressCallback, TrainConfig, check_config


def fit_file(normal_file: str | os.PathLike, output: str | os.PathLike = "model.onnx", *,
             config: TrainConfig | None = None, val: str | os.PathLike | None = None, alpha: float = 0.01,
             condition: str | os.PathLike | None = None, val_condition: str | os.PathLike | None = None,
             condition_kind: str = "auto", checkpoint: str | os.PathLike | None = None,
             checkpoint_every: int = 10, resume: str | os.PathLike | None = None,
             progress: ProgressCallback | None = None) -> dict:
    """Train a VAE on the rows of ``normal_file``, calibrate it, and write one ONNX model file.

    Parameters
    ----------
    normal_file : normal rows: .npy (rows, or images (N, H, W) / (N, C, H, W)), .npz (array ``X``),
        .csv or .parquet, numeric.
    output : where the model goes; written atomically (an existing model is replaced only by a
        complete, checked one, never damaged).
    config : training settings (:class:`~vae_anomaly.training.config.TrainConfig`); None = defaults.
    val : separate validation/calibration rows; None = a seeded ``config.val_fraction`` of the rows.
    alpha : false-alarm rate of ``--threshold auto``, stored in the model, in (0, 1).
    condition, val_condition, condition_kind : conditions of the rows (a conditional VAE); see
        :mod:`vae_anomaly.deploy.conditions`.
    checkpoint, checkpoint_every : write a training checkpoint there every ``checkpoint_every`` epochs.
    resume : continue from this checkpoint (written for the same rows); checkpoints keep going to it
        unless ``checkpoint`` is given.
    progress : called after each epoch as progress(epoch, max_epochs, train_loss, val_neg_elbo).

    Returns
    -------
    dict, the model's metadata (``training`` holds the summary: rows, epochs, seconds, device).

    Raises
    ------
    InputValidationError : bad rows or settings (checked before training starts; exit code 3).
    ModelArtifactError : an unreadable or foreign checkpoint (exit code 4).
    OutputWriteError : ``output``'s folder cannot be written (checked before training; exit code 5).
    TrainingError : the loss diverged, or onnxruntime disagrees with torch (exit code 1).
    """
    from .export import (
        export_model,  # torch: imported when called, so the name imports without it
    )
    from .train import train

    check_output_folder(output)  # fail before training, not after
    check_alpha(alpha)
    cfg = check_config(config or TrainConfig())
    X = read_matrix(normal_file)
    X_val = read_matrix(val) if val is not None else None
    C = read_matrix(condition) if condition is not None else None
    C_val = read_matrix(val_condition) if val_condition is not None else None
    if (C is None) != (C_val is None) and X_val is not None:
        raise InputValidationError("--val-condition: a conditional fit with --val needs the validation rows' "
                                   "conditions too (and only then).")
    result = train(X, X_val=X_val, condition=C, condition_val=C_val, condition_kind=condition_kind, config=cfg,
                   progress=progress, name=str(normal_file), checkpoint=checkpoint if checkpoint is not None else resume,
                   checkpoint_every=checkpoint_every, resume=resume)
    return export_model(result, output, alpha=alpha)


def fit_progress_bar(quiet: bool = False, console=None):
    """A rich progress bar for a fit (epoch, training loss, validation negative ELBO, time) and the
    ``progress`` callback of :func:`fit_file` that drives it; ``console`` defaults to stderr.

    The bar starts with the first epoch, so an input error prints no empty bar; call ``bar.stop()``
    when the fit returns or fails. ``quiet`` disables it.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]fit[/] epoch {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("train {task.fields[train]:.3f}  val neg-ELBO {task.fields[val]:.3f}"),
                   TimeElapsedColumn(), console=console or Console(stderr=True), disable=quiet)
    task = bar.add_task("fit", total=None, train=float("nan"), val=float("nan"))

    def progress(epoch: int, max_epochs: int, train_loss: float, val_loss: float) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=epoch, total=max_epochs, train=train_loss, val=val_loss)

    return bar, progress
