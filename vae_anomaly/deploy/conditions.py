"""Conditions of a conditional VAE: what a condition file holds and how it enters the graph (numpy only).

A condition is known context per row that changes what "normal" means (the machine, the hour, the
product). Two kinds:

* ``categorical``: one integer id per row in [0, K) (shape (n,) or (n, 1)), or one-hot rows
  (shape (n, K), exactly one 1 per row); the graph receives the one-hot rows, float32 (n, K);
* ``numeric``: a context vector per row, shape (n, m) (or (n,) for m = 1), finite numbers; the
  graph receives it as float32 (n, m) and standardizes it inside with the training mean and
  standard deviation.

The model's metadata stores the kind and size (``{"kind": "categorical", "n_categories": K}`` or
``{"kind": "numeric", "size": m}``); scoring a conditional model without conditions, or with
conditions of another kind, size or row count, is an :class:`InputValidationError` (exit code 3).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputValidationError
from .validation import NUMERIC_KINDS

KINDS = ("auto", "categorical", "numeric")


def _as_numbers(C, name: str) -> np.ndarray:
    try:
        arr = np.asarray(C)
    except ValueError:  # ragged nested lists
        raise InputValidationError(f"{name}: conditions have rows of different lengths; expected one id or "
                                   "one vector of the same size per row.") from None
    if arr.dtype.hasobject or arr.dtype.kind not in NUMERIC_KINDS:
        raise InputValidationError(f"{name}: conditions have dtype {arr.dtype}; expected numbers "
                                   "(integer category ids, one-hot rows or a numeric context vector).")
    if arr.ndim not in (1, 2):
        raise InputValidationError(f"{name}: conditions are {arr.ndim}-D with shape {arr.shape}; expected "
                                   "(n_rows,) ids or (n_rows, m) vectors.")
    if not np.isfinite(arr).all():
        raise InputValidationError(f"{name}: conditions hold NaN or infinite values; expected finite numbers.")
    return arr


def _is_ids(arr: np.ndarray) -> bool:
    return (arr.ndim == 1 or arr.shape[1] == 1) and arr.dtype.kind in "biu"


def _is_one_hot(arr: np.ndarray) -> bool:
    return arr.ndim == 2 and arr.shape[1] > 1 and bool(np.isin(arr, (0, 1)).all()) and bool((arr.sum(1) == 1).all())


def fit_spec(C, n_rows: int, kind: str = "auto", name: str = "condition") -> dict:
    """The condition spec learned from the training conditions ``C``.

    ``kind="auto"``: integer ids (integer dtype, (n,) or (n, 1)) or one-hot rows -> categorical
    (K = the largest id + 1, or the number of columns); anything else -> numeric.

    Raises
    ------
    InputValidationError : not numeric, wrong row count, NaN/inf, negative ids, or a kind that
        does not fit the values.
    """
    if kind not in KINDS:
        raise InputValidationError(f"--condition-kind: got {kind!r}; expected one of {', '.join(KINDS)}.")
    arr = _as_numbers(C, name)
    _check_rows(arr, n_rows, name)
    if kind == "auto":
        kind = "categorical" if _is_ids(arr) or _is_one_hot(arr) else "numeric"
    if kind == "numeric":
        return {"kind": "numeric", "size": 1 if arr.ndim == 1 else int(arr.shape[1])}
    if _is_one_hot(arr):
        return {"kind": "categorical", "n_categories": int(arr.shape[1])}
    ids = arr.reshape(-1)
    if ids.size == 0 or np.any(ids < 0) or np.any(ids != np.round(ids)):
        raise InputValidationError(f"{name}: categorical conditions must be integer ids >= 0 (one per row) "
                                   "or one-hot rows; use --condition-kind numeric for a context vector.")
    return {"kind": "categorical", "n_categories": int(ids.max()) + 1}


def width(spec: dict | None) -> int:
    """Columns m of the graph's condition input (0 for an unconditional model)."""
    if not spec:
        return 0
    return int(spec["n_categories"] if spec["kind"] == "categorical" else spec["size"])


def encode(C, spec: dict | None, n_rows: int, name: str = "condition") -> np.ndarray | None:
    """The graph's condition input for ``C``: float32 (n_rows, m), C-ordered; None when unconditional.

    Raises
    ------
    InputValidationError : a conditional model without conditions, conditions for an
        unconditional model, or conditions of another kind, size or row count than ``spec``.
    """
    if not spec:
        if C is not None:
            raise InputValidationError(f"{name}: the model is not conditional; score without conditions "
                                       "or fit a model with --condition.")
        return None
    if C is None:
        raise InputValidationError(
            f"{name}: the model is conditional ({describe(spec)}); pass one condition per row "
            "(CLI: --condition FILE)."
        )
    arr = _as_numbers(C, name)
    _check_rows(arr, n_rows, name)
    m = width(spec)
    if spec["kind"] == "numeric":
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        if arr.shape[1] != m:
            raise InputValidationError(f"{name}: conditions have {arr.shape[1]} columns; the model expects a "
                                       f"numeric context of size {m}.")
        return np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[1] == m and m > 1:
        if not _is_one_hot(arr):
            raise InputValidationError(f"{name}: conditions of {m} columns must be one-hot rows (one 1 per row).")
        return np.ascontiguousarray(arr, dtype=np.float32)
    ids = arr.reshape(-1) if (arr.ndim == 1 or arr.shape[1] == 1) else None
    if ids is None or np.any(ids != np.round(ids)) or np.any(ids < 0) or np.any(ids >= m):
        raise InputValidationError(
            f"{name}: expected integer category ids in [0, {m}) (one per row) or one-hot rows of {m} "
            "columns; the model was fitted on those categories."
        )
    out = np.zeros((arr.shape[0], m), dtype=np.float32)
    out[np.arange(arr.shape[0]), ids.astype(np.int64)] = 1.0
    return out


def describe(spec: dict | None) -> str:
    """One phrase for messages and ``info``."""
    if not spec:
        return "unconditional"
    if spec["kind"] == "categorical":
        return f"categorical condition, {spec['n_categories']} categories"
    return f"numeric condition of size {spec['size']}"


def _check_rows(arr: np.ndarray, n_rows: int, name: str) -> None:
    if arr.shape[0] != n_rows:
        raise InputValidationError(f"{name}: {arr.shape[0]} condition rows for {n_rows} data rows; expected one "
                                   "condition per row, in the same order.")
