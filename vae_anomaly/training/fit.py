"""Fitting from files: the library call behind ``vae-anomaly fit`` (read, train, export, calibrate).

Importing this module does not import torch; :func:`fit_file` does, once it has read and checked its
input (a missing file or a bad option is refused without the seconds that import costs).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..deploy import schema, series
from ..deploy.artifact import model_key
from ..deploy.calibration import check_alpha
from ..deploy.io import (
    check_output_folder,
    read_fit_table,
    read_matrix,
    read_table_rows,
)
from ..deploy.tables import DEFAULT_CSV, TABLE_SUFFIXES, CsvFormat, file_schema, read_table
from ..errors import InputValidationError
from .config import ProgressCallback, TrainConfig, check_config

#: the training settings of a window model whose window holds more than
#: :data:`~vae_anomaly.deploy.series.AUTO_WINDOW_VALUES` values (many metrics), unless ``hidden`` is
#: set: three hidden layers of 128, and a budget of 100 epochs (``target_steps`` 0: the 100-epoch
#: floor) but at most 8,000 steps of 128 rows. The fit-time floors of issue 30 (8,640 steps of 19
#: metrics within a minute, 23,700 of 38 within three, on 2 cores) rule out three layers of 256 at
#: the full budget (108 s on the first), three layers of 128 at it (70 s) and 100 epochs on the
#: second (237 s median); the accuracy each cut cost on the 8 shared servers is in
#: benchmarks/README.md, "Server metrics: SMD and ASD (issue 30)"
WIDE_WINDOW = {"hidden": (128, 128, 128), "target_steps": 0, "max_steps": 8000}


def fit_file(normal_file: str | os.PathLike, output: str | os.PathLike = "model.onnx", *,
             config: TrainConfig | None = None, val: str | os.PathLike | None = None, alpha: float = 0.01,
             condition: str | os.PathLike | None = None, val_condition: str | os.PathLike | None = None,
             condition_kind: str = "auto", checkpoint: str | os.PathLike | None = None,
             checkpoint_every: int = 10, resume: str | os.PathLike | None = None,
             progress: ProgressCallback | bool | None = None, exclude=None, id_columns=None, categorical=None,
             csv_format: CsvFormat = DEFAULT_CSV, window: int | str | None = None, time_column: str | None = None,
             labels: str | os.PathLike | None = None, time_order: str = "strict",
             time_unit: str | None = None, seasons: str = "off") -> dict:
    """Train a VAE on the rows of ``normal_file``, calibrate it, and write one ONNX model file.

    Parameters
    ----------
    normal_file : normal rows: a table (.csv with a header row, or .parquet: numeric and
        categorical columns, matched by name when scoring), or a numeric matrix (.npy: rows, or
        images (N, H, W) / (N, C, H, W); .npz: array ``X``), taken by position.
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
    progress : True = the CLI's progress bar (epoch, training loss, validation negative ELBO, time)
        on stderr; False = none; None (default) = the bar in a Jupyter notebook, none elsewhere (a
        script's output stays clean); or a callable, called after each epoch as
        progress(epoch, max_epochs, train_loss, val_neg_elbo).
    exclude, id_columns, categorical : column roles of a table (names, a list or "a,b"): columns
        ignored at fit and score; ID columns (never features; carried into the score output);
        integer columns modelled as categories (text, boolean and dictionary columns always are).
        See :mod:`vae_anomaly.deploy.schema`.
    csv_format : a CSV's header and delimiter (:class:`~vae_anomaly.deploy.tables.CsvFormat`).
    window : a metric series' window W (time steps; "auto" = :func:`~vae_anomaly.deploy.series.auto_window`
        of the number of metrics):
        the table's rows are timestamps and the model sees W consecutive steps of its numeric
        columns (:mod:`vae_anomaly.deploy.series`); None = rows are independent.
    time_column : the series' time column (default: ``timestamp``, ``time``, or the one date/time column).
    labels : a series' known anomalous points, one 0/1 label per row (a file :func:`read_matrix`
        reads): left out of the likelihood.
    time_order : a series' rows whose timestamp repeats or goes back: "strict" refuses them,
        "as-read" takes each as the step after the row before it (counted in the metadata's
        ``series.out_of_order_rows``).
    time_unit : the unit of a time column of epoch numbers, "s", "ms", "us" or "ns" (recorded in the
        model; numbers without it are refused); None for dates and times.
    seasons : a series' seasons: "off" (default), or "auto": the time of day when the training period
        spans at least 2 days, and of week from 14, become the model's condition
        (:func:`~vae_anomaly.deploy.series.season_parts`; docs/series.md, "Seasons").

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
    check_output_folder(output)  # fail before training, not after
    check_alpha(alpha)
    model_key()  # an empty VAE_ANOMALY_MODEL_KEY is refused now, not when the model is written
    cfg = check_config(config or TrainConfig())
    if window is not None:
        series.refuse_condition(condition if condition is not None else val_condition, "--condition")
    X, X_val, table, series_spec, C, C_val = _training_rows(
        normal_file, val, csv_format, val_fraction=cfg.val_fraction, exclude=exclude, id_columns=id_columns,
        categorical=categorical, window=window, time_column=time_column, labels=labels, time_order=time_order,
        time_unit=time_unit, seasons=seasons)
    if series_spec is not None and cfg.hidden is None and \
            series_spec["window"] * len(series_spec["metrics"]) > series.AUTO_WINDOW_VALUES:
        cfg = replace(cfg, **WIDE_WINDOW)
    if series_spec is not None:
        condition_kind = "numeric"  # the seasons' sin and cos, or none
    else:
        C = read_matrix(condition, csv_format) if condition is not None else None
        C_val = read_matrix(val_condition, csv_format) if val_condition is not None else None
    if (C is None) != (C_val is None) and X_val is not None:
        raise InputValidationError("--val-condition: a conditional fit with --val needs the validation rows' "
                                   "conditions too (and only then).")
    from .export import export_model  # torch: imported once the input has been read and checked
    from .train import train

    bar, callback = _progress(progress)
    try:
        result = train(X, X_val=X_val, condition=C, condition_val=C_val, condition_kind=condition_kind, config=cfg,
                       progress=callback, name=str(normal_file),
                       checkpoint=checkpoint if checkpoint is not None else resume,
                       checkpoint_every=checkpoint_every, resume=resume,
                       categories=() if table is None else schema.categories(table),
                       missing=series_spec is not None, slot_columns=_slot_columns(table, series_spec))
    finally:
        if bar is not None:
            bar.stop()
    return export_model(result, output, alpha=alpha, table=table, series=series_spec)


def _progress(progress: ProgressCallback | bool | None):
    """(the bar to stop or None, the per-epoch callback or None) for fit_file's ``progress``."""
    if progress is None:
        from rich.console import Console

        progress = Console(stderr=True).is_jupyter
    if progress is True:
        return _progress_bar()
    if progress is not False and not callable(progress):
        raise InputValidationError(f"progress: got {progress!r}; expected True, False, None or a callable "
                                   "progress(epoch, max_epochs, train_loss, val_neg_elbo).")
    return None, progress or None


def _slot_columns(table: dict | None, series_spec: dict | None) -> list[str] | None:
    """The input column (a table's feature, a series' metric) of each column of the training rows."""
    if table is not None:
        return schema.slot_columns(table)
    if series_spec is not None:
        return series.slot_metrics(series_spec["metrics"], series_spec["window"])
    return None


def _training_rows(normal_file, val, csv_format: CsvFormat, *, val_fraction: float, exclude, id_columns, categorical,
                   window, time_column, labels, time_order, time_unit, seasons="off"):
    """(X, X_val or None, table schema or None, series spec or None, and a series' seasons'
    conditions of X and X_val or None, None) read from the training files."""
    is_table = Path(normal_file).suffix.lower() in TABLE_SUFFIXES
    if window is not None:
        if not is_table or val is not None or categorical:
            raise InputValidationError(f"{normal_file}: --window needs a table (.csv or .parquet) of timestamps and "
                                       "numeric metrics, without --val or --categorical (the calibration windows "
                                       "are the end of the series).")
        spec = series.series_spec(file_schema(normal_file, csv_format),
                                  window=window,
                                  time_column=time_column, exclude=exclude, id_columns=id_columns,
                                  time_unit=time_unit, name=str(normal_file))
        # read as scoring reads it: every metric float64 whatever its first MiB held, the time column as text
        data = read_table(normal_file, csv_format, column_types=series.read_types(spec),
                          columns=series.needed_columns(spec))
        y = read_matrix(labels, csv_format) if labels is not None else None
        X, X_val, spec, C, C_val = series.fit_windows(data, spec, val_fraction=val_fraction, labels=y,
                                                      name=str(normal_file), time_order=time_order, seasons=seasons)
        return X, X_val, None, spec, C, C_val
    if labels is not None or time_column is not None or time_order != "strict" or time_unit is not None or \
            seasons != "off":
        raise InputValidationError("--labels, --time-column, --time-order, --time-unit and --seasons belong to a "
                                   "series fit: add --window.")
    if is_table:
        X, table = read_fit_table(normal_file, csv_format, exclude=exclude, id_columns=id_columns,
                                  categorical=categorical)
    elif exclude or id_columns or categorical:
        raise InputValidationError(f"{normal_file}: --exclude, --id-columns and --categorical need a table "
                                   "(.csv or .parquet) with named columns.")
    else:
        X, table = read_matrix(normal_file), None
    X_val = None
    if val is not None:
        X_val = read_table_rows(val, table, csv_format) if table is not None and Path(val).suffix.lower() \
            in TABLE_SUFFIXES else read_matrix(val, csv_format)
    return X, X_val, table, None, None, None


def _progress_bar():
    """A rich progress bar on stderr for a fit (epoch, training loss, validation negative ELBO,
    time) and the ``progress`` callback of :func:`fit_file` that drives it.

    The bar starts with the first epoch, so an input error prints no empty bar; call ``bar.stop()``
    when the fit returns or fails.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]fit[/] epoch {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("train {task.fields[train]:.3f}  val neg-ELBO {task.fields[val]:.3f}"),
                   TimeElapsedColumn(), console=Console(stderr=True))
    task = bar.add_task("fit", total=None, train=float("nan"), val=float("nan"))

    def progress(epoch: int, max_epochs: int, train_loss: float, val_loss: float) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=epoch, total=max_epochs, train=train_loss, val=val_loss)

    return bar, progress
