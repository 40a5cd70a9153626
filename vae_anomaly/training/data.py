"""Data preparation for training: checks, the seeded train/validation split, standardization.

Everything here is numpy; the fit loop gets float32 arrays that are already validated.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..deploy import conditions
from ..deploy.validation import check_array, column_label, flatten_rows
from ..errors import InputValidationError
from .config import MIN_CALIBRATION_ROWS, TrainConfig


@dataclass
class PreparedData:
    """Validated training and validation rows.

    Attributes
    ----------
    x_train, x_val : float32, (n_train, d) and (n_val, d), raw (unstandardized) rows.
    c_train, c_val : float32 encoded conditions of those rows, or None (unconditional).
    spec : the condition spec (:mod:`vae_anomaly.deploy.conditions`) or None.
    row_shape : shape of one input row as given, e.g. (d,) or an image's (H, W) / (C, H, W).
    image_shape : (C, H, W) for a convolutional model, else None.
    fingerprint : SHA-256 hex of X's rows (and conditions): which data a checkpoint belongs to.
    n_rows : rows given in X, plus the separate validation rows if any.
    n_dropped : training rows left out because every entry is missing (``missing=True`` only).
    """

    x_train: np.ndarray
    x_val: np.ndarray
    c_train: np.ndarray | None
    c_val: np.ndarray | None
    spec: dict | None
    row_shape: tuple[int, ...]
    image_shape: tuple[int, int, int] | None
    fingerprint: str
    n_rows: int
    n_dropped: int = 0


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of row indices into (train, val); val has ceil(fraction·n) rows, >= 5.

    ``val_fraction`` in (0, 1) is checked by :func:`~vae_anomaly.training.config.check_config`.

    Raises
    ------
    InputValidationError : fewer than 6 rows (one to train on, five to calibrate on).
    """
    n_val = max(MIN_CALIBRATION_ROWS, math.ceil(val_fraction * n))
    if n - n_val < 1:
        raise InputValidationError(
            f"X has {n} rows; expected at least {MIN_CALIBRATION_ROWS + 1} (one to train on and "
            f"{MIN_CALIBRATION_ROWS} to calibrate on). Provide more normal rows."
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64) of training rows; zero std -> 1."""
    loc = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[~(scale > 1e-12)] = 1.0
    return loc, scale


def observed_standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64) of the observed (non-NaN) values of
    training rows that may hold missing values; a feature with no observed value gets 0 and 1, a
    constant one scale 1."""
    observed = ~np.isnan(x)
    count = observed.sum(axis=0)
    filled = np.where(observed, x, 0).astype(np.float64)
    loc = filled.sum(axis=0) / np.maximum(count, 1)
    scale = np.sqrt(np.where(observed, (filled - loc) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1))
    scale[~(scale > 1e-12)] = 1.0
    return loc, scale


def check_missing(x: np.ndarray, name: str, first_row: int = 0, columns: list[str] | None = None) -> None:
    """Refuse ±inf in rows whose NaN are missing values (``check_array(allow_nonfinite=True)``
    output, float32); ``columns`` names x's columns in the message (else their positions).

    Raises
    ------
    InputValidationError : an infinite value (or one beyond float32's range), by (row, column).
    """
    bad = np.isinf(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputValidationError(
            f"{name}: X holds {int(bad.sum())} infinite values or values beyond float32's range (first at row "
            f"{first_row + r}, column {column_label(c, columns)}); expected finite numbers or NaN for a missing value. Set them to NaN "
            "to leave them out, or drop those rows.")


def one_hot_standardization(loc: np.ndarray, scale: np.ndarray, categories: tuple[int, ...]
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``loc``, ``scale`` (float64, (d,)) with 0 and 1 for every one-hot slot of ``categories``
    (the trailing Σ (K_c + 1) columns): the categorical likelihood reads the raw 0/1 slots. The
    numeric columns keep theirs; unchanged when ``categories`` is ()."""
    loc, scale = np.array(loc, dtype=np.float64), np.array(scale, dtype=np.float64)
    n_slots = sum(int(k) + 1 for k in categories)
    if n_slots:
        loc[loc.shape[0] - n_slots :] = 0.0
        scale[scale.shape[0] - n_slots :] = 1.0
    return loc, scale


def check_categories(x: np.ndarray, categories: tuple[int, ...], name: str, *, allow_unseen: bool) -> None:
    """Check that the trailing Σ (K_c + 1) columns of ``x`` (float32, (n, d)) are one-hot blocks:
    0/1 values with exactly one 1 per block, and (unless ``allow_unseen``) 0 in each block's last,
    "unseen category", slot.

    Raises
    ------
    InputValidationError : a block that is not one-hot, an unseen category in training rows, or
        more one-hot slots than columns.
    """
    n_slots = sum(k + 1 for k in categories)
    if n_slots > x.shape[1]:
        raise InputValidationError(f"{name}: categories {categories} need {n_slots} one-hot columns (K + 1 per "
                                   f"categorical column), but {name} has {x.shape[1]} features.")
    pos = x.shape[1] - n_slots
    for c, k in enumerate(categories):
        block = x[:, pos : pos + k + 1]
        bad = ~(((block == 0) | (block == 1)).all(axis=1) & (block.sum(axis=1) == 1))
        if not allow_unseen:
            bad |= block[:, k] != 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputValidationError(
                f"{name}: row {row}, categorical column {c} (columns {pos}..{pos + k}) is {block[row].tolist()}; "
                f"expected a one-hot block of {k} categories + 1 unseen slot"
                + ("" if allow_unseen else " (0 in training rows)") + ". Encode the table with the table encoder.")
        pos += k + 1


def image_shape(shape: tuple[int, ...], arch: str, name: str) -> tuple[int, int, int] | None:
    """(C, H, W) for a convolutional model of rows of ``shape``, or None for an MLP.

    Raises
    ------
    InputValidationError : ``arch="conv"`` for rows that are not images.
    """
    if arch == "mlp" or (arch == "auto" and len(shape) <= 1):
        return None
    if len(shape) not in (2, 3):
        raise InputValidationError(f"{name}: --arch conv needs images, (n, H, W) or (n, C, H, W); got rows of "
                                   f"shape {shape}. Reshape the data, or use --arch mlp.")
    return (1, *shape) if len(shape) == 2 else tuple(shape)


#: constant training columns named in the warning of :func:`warn_constant_columns`, at most
_MAX_NAMED = 8


def warn_constant_columns(x: np.ndarray, slot_columns: list[str] | None, name: str) -> None:
    """Warn, by name, about columns that hold one value in every training row.

    Such a column (a label left in the file, a metric that never moved, a category column with one
    category) cannot tell normal rows apart, and any other value at scoring scores high. It is kept
    (the model is fitted as asked); the warning suggests ``--exclude`` with their names.

    Parameters
    ----------
    x : the training rows as encoded for the graph, float (n_rows, n_slots); NaN (a missing value)
        is ignored.
    slot_columns : the input column each slot encodes (a categorical column's one-hot slots, a
        metric's window slots share one name); None = "column i", by position.
    name : how the rows are named in the warning.
    """
    if x.shape[0] < 2:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slot
        constant = ~(np.nanmax(x, axis=0) > np.nanmin(x, axis=0))
    columns = slot_columns if slot_columns is not None else [f"column {i}" for i in range(x.shape[1])]
    varying = {c for c, k in zip(columns, constant) if not k}
    names = list(dict.fromkeys(c for c, k in zip(columns, constant) if k and c not in varying))
    if names:
        shown = ", ".join(map(repr, names[:_MAX_NAMED])) + (f" and {len(names) - _MAX_NAMED} more"
                                                             if len(names) > _MAX_NAMED else "")
        fix = (f"fit again without them (--exclude {','.join(names)}, or exclude= in Python)"
               if slot_columns is not None else "drop them from the rows and fit again")
        warnings.warn(
            f"{name}: {len(names)} column{'s' if len(names) > 1 else ''} ({shown}) hold{'' if len(names) > 1 else 's'} "
            "one value in every training row: a label left in, or a feature that cannot tell normal rows apart "
            f"(any other value will score high). Kept; if that is not what you want, {fix}.",
            stacklevel=2)


def prepare(X, cfg: TrainConfig, *, X_val=None, condition=None, condition_val=None,
            condition_kind: str = "auto", name: str = "X", categories: tuple[int, ...] = (),
            missing: bool = False, slot_columns: list[str] | None = None) -> PreparedData:
    """Validate the rows (and conditions) and split off the validation rows.

    Parameters
    ----------
    X : array-like (n_rows, n_features) or images (n_rows, H, W) / (n_rows, C, H, W), any numeric dtype.
    cfg : the (checked) training settings: ``arch``, ``val_fraction``, ``seed``, ``decoder_variance``.
    X_val : separate validation rows; None = a seeded ``cfg.val_fraction`` of X (:func:`split_rows`).
    condition, condition_val, condition_kind : conditions of X's and X_val's rows (see
        :mod:`vae_anomaly.deploy.conditions`).
    name : how X is named in errors.
    categories : (K_1, ..., K_C) of the categorical columns encoded as the trailing one-hot blocks
        (:class:`~vae_anomaly.training.model.Architecture`); () = all numeric.
    missing : X and X_val may hold NaN, missing values (never ±inf); training rows with every entry
        missing are dropped (counted in ``n_dropped``), validation rows are kept as they are.
    slot_columns : the input column of each of X's columns, for :func:`warn_constant_columns` (which
        runs on every fit but of images); None = by position.

    Raises
    ------
    InputValidationError : non-numeric or non-finite rows (NaN allowed with ``missing``), too few
        rows, mismatched conditions, images with ``decoder_variance="row"``, categories with images,
        with ``missing``, or blocks that are not one-hot (an unseen category in X, which only X_val
        may hold).
    """
    row_shape = tuple(int(v) for v in np.shape(X)[1:])
    image = image_shape(row_shape, cfg.arch, name)
    if image is not None and cfg.decoder_variance != "feature":
        raise InputValidationError("--decoder-variance: the convolutional VAE supports only 'feature'.")
    categories = tuple(int(k) for k in categories)
    if categories and image is not None:
        raise InputValidationError(f"{name}: categorical columns need the MLP architecture, but the rows are "
                                   "images (--arch conv). Use --arch mlp, or encode no categorical columns.")
    if any(k < 1 for k in categories):
        raise InputValidationError(f"categories: got {categories}; expected category counts >= 1.")
    if categories and missing:
        raise InputValidationError("missing: missing values (NaN) are supported for all-numeric columns only; "
                                   "got categorical columns too. Fit without missing=True, or encode no "
                                   "categorical columns.")
    x_all = check_array(flatten_rows(X, row_shape, name=name), name=name, min_rows=1, allow_nonfinite=missing,
                        columns=slot_columns)
    if missing:
        check_missing(x_all, name, columns=slot_columns)
    if categories:
        check_categories(x_all, categories, name, allow_unseen=False)
    spec = None if condition is None else conditions.fit_spec(condition, len(x_all), condition_kind)
    c_all = conditions.encode(condition, spec, len(x_all))
    fingerprint = hashlib.sha256(x_all.tobytes() + (b"" if c_all is None else c_all.tobytes())).hexdigest()
    if X_val is None:
        if condition_val is not None:
            raise InputValidationError("validation conditions were given without validation rows (--val).")
        tr, va = split_rows(x_all.shape[0], cfg.val_fraction, cfg.seed)  # refuses too few rows before the warning below
        x_train, x_val = x_all[tr], x_all[va]
        c_train, c_val = (None, None) if c_all is None else (c_all[tr], c_all[va])
    else:
        x_train, c_train = x_all, c_all
        x_val = check_array(flatten_rows(X_val, row_shape, name="validation data"), name="validation data",
                            n_features=x_all.shape[1], min_rows=MIN_CALIBRATION_ROWS, allow_nonfinite=missing,
                            columns=slot_columns)
        if missing:
            check_missing(x_val, "validation data", columns=slot_columns)
        if categories:
            check_categories(x_val, categories, "validation data", allow_unseen=True)
        c_val = conditions.encode(condition_val, spec, len(x_val), "validation conditions")
    if image is None:
        warn_constant_columns(x_all, slot_columns, name)
    n_dropped = 0
    if missing:
        keep = ~np.isnan(x_train).all(axis=1)
        n_dropped = int((~keep).sum())
        if not keep.any():
            raise InputValidationError(f"{name}: every training row has all of its values missing (NaN); "
                                       "expected at least one row with an observed value.")
        if n_dropped:
            x_train = x_train[keep]
            c_train = None if c_train is None else c_train[keep]
    return PreparedData(x_train=x_train, x_val=x_val, c_train=c_train, c_val=c_val, spec=spec,
                        row_shape=row_shape, image_shape=image, fingerprint=fingerprint,
                        n_rows=int(x_all.shape[0] + (0 if X_val is None else x_val.shape[0])), n_dropped=n_dropped)
