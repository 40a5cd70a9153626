"""One check_array-style gate for every input matrix, at every entry point (numpy only)."""

from __future__ import annotations

import numpy as np

from ..errors import InputValidationError

#: dtype kinds accepted as numbers: bool, signed int, unsigned int, float
NUMERIC_KINDS = "biuf"


def column_label(c: int, columns: list[str] | None) -> str:
    """How column ``c`` of a matrix is named in a message: its name when known, else its position."""
    return repr(columns[c]) if columns is not None and 0 <= c < len(columns) else str(c)


def check_array(X, *, name: str = "X", n_features: int | None = None, min_rows: int = 0,
                allow_nonfinite: bool = False, first_row: int = 0, columns: list[str] | None = None) -> np.ndarray:
    """Validate a matrix of rows and return it as float32, C-ordered, shape (n_rows, n_features).

    Parameters
    ----------
    X : array-like of numbers, shape (n_rows, n_features). Any numeric dtype, byte order or memory
        order is accepted; the values are converted to float32.
    name : how the input is named in error messages (usually the file name).
    n_features : the number of columns the model expects, or None to accept any.
    min_rows : the fewest rows accepted.
    allow_nonfinite : keep NaN/±inf (and values beyond float32's range, which become ±inf) for
        the caller to handle; by default they are refused.
    first_row : added to row numbers in messages (X is a chunk starting at that row of a file).
    columns : a name for each column, used in messages in place of its position.

    Returns
    -------
    ndarray, float32, C-contiguous, shape (n_rows, n_features).

    Raises
    ------
    InputValidationError
        Not numeric, not 2-D, zero columns, too few rows, the wrong number of columns, or NaN/±inf
        values (the count and the first (row, column) are named), or values beyond float32's range.
    """
    arr = np.asarray(X)
    if arr.dtype.hasobject or arr.dtype.kind not in NUMERIC_KINDS:
        raise InputValidationError(
            f"{name}: X has dtype {arr.dtype}; expected numbers (bool, int or float). "
            "Encode non-numeric columns first."
        )
    if arr.ndim != 2:
        hint = (
            " Reshape with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single row."
            if arr.ndim == 1
            else " Flatten each row to a vector of features."
        )
        raise InputValidationError(
            f"{name}: X is {arr.ndim}-D with shape {arr.shape}; expected a 2-D array "
            f"(n_rows, n_features).{hint}"
        )
    n, d = arr.shape
    if d == 0:
        raise InputValidationError(f"{name}: X has 0 features; expected at least one column.")
    if n_features is not None and d != n_features:
        raise InputValidationError(
            f"{name}: X has {d} features, but the model expects {n_features}. "
            "Score data with the same columns the model was fitted on."
        )
    if n < min_rows:
        raise InputValidationError(f"{name}: X has {n} rows; expected at least {min_rows}.")
    if arr.dtype.kind == "f" and not allow_nonfinite:
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise InputValidationError(
                f"{name}: X holds {int(bad.sum())} NaN or infinite values (first at row {first_row + r}, "
                f"column {column_label(c, columns)}); expected finite numbers. Drop or impute those rows (the CLI's score --nan-policy flag reports them as anomalous)."
            )
    with np.errstate(over="ignore"):  # overflow is reported below, by position
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not allow_nonfinite and (arr.dtype.itemsize > 4 or arr.dtype.kind in "iu"):
        overflow = ~np.isfinite(out)
        if overflow.any():
            r, c = np.argwhere(overflow)[0]
            raise InputValidationError(
                f"{name}: X holds values beyond float32's range (first at row {first_row + r}, column "
                f"{column_label(c, columns)}); expected |x| < 3.4e38. Rescale those columns."
            )
    return out


def flatten_rows(X, row_shape: tuple[int, ...] | None, *, name: str = "X"):
    """Rows given as images, (n, *row_shape) with a row_shape of 2 or 3 dims, -> (n, prod(row_shape)).

    Anything else is returned as is, for :func:`check_array` to judge.

    Raises
    ------
    InputValidationError : images of another shape than ``row_shape``.
    """
    if row_shape is None or len(row_shape) < 2:
        return X
    arr = np.asarray(X)
    if arr.ndim == 1 + len(row_shape):
        if tuple(arr.shape[1:]) != tuple(row_shape):
            raise InputValidationError(
                f"{name}: images of shape {tuple(arr.shape[1:])}; the model was fitted on images of shape "
                f"{tuple(row_shape)}. Resize them, or score rows flattened to {int(np.prod(row_shape))} values."
            )
        return arr.reshape(arr.shape[0], int(np.prod(row_shape)))  # explicit width: 0 rows reshape too
    return arr
