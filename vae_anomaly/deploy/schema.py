"""The table schema of a model: column roles and kinds, categorical vocabularies, and the encoding
of a table into the model's input matrix (numpy + pyarrow; no torch).

A model fitted on a table stores its schema as the metadata entry ``table`` (docs/model-file.md)::

    {"features": [{"name": "duration", "kind": "numeric"}, ...,
                  {"name": "protocol_type", "kind": "categorical", "categories": ["icmp", "tcp", "udp"]}, ...],
     "id_columns": ["host"], "exclude": ["attack", "difficulty"]}

Numeric features come first, then categorical ones, each group in the order of the fitted file.
The graph's input ``x`` (float32, (n_rows, n_features)) is: each numeric feature's raw value, then
for each categorical feature with K categories a block of K + 1 one-hot slots, slot k for
``categories[k]`` and the last for a value never seen in training. A missing value is NaN (a
numeric cell; every slot of a categorical block). Columns are matched by name, in any order;
columns the model does not use are ignored.

A categorical feature also records the kind of its values, ``"values"``: "integer", "boolean" or
"text" (absent in older models: "text"). Every reader (CSV, Parquet, DataFrame, JSON records,
Dask, the estimator) turns a column into the category text through :func:`category_text`, which
writes a value in that kind's one canonical form, so ``"01"`` (CSV text), ``1`` (Parquet, pandas)
and ``1.0`` (pandas with a missing value) are the one category ``"1"``, and ``True`` (pandas),
``true`` (Parquet) and ``"TRUE"`` are ``"true"``.

Column roles at fit (:func:`infer_roles`): every column is a feature unless excluded or an ID
column; string, boolean and dictionary-encoded columns are categorical, and so are integer columns
named in ``categorical``; numbers are numeric; a date/time column, or a text column with too many
distinct values to be a category (:data:`MAX_CATEGORIES`, or more than half of the rows), is refused
with the advice to make it an ID column or exclude it.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable

import numpy as np

from ..errors import InputValidationError
from .tables import arrow_compute, load_pyarrow, select_columns, to_numpy

#: the most categories a categorical column may have
MAX_CATEGORIES = 1000
#: a text column needs at least this many rows before "more than half the rows distinct" applies
_MIN_ROWS_FOR_RATIO = 20
#: a scored column with more than this share of unseen categories (and at least _MIN_UNSEEN rows of
#: them) warns: the calibration rows hold none (the vocabulary is every category of the fitted rows)
UNSEEN_SHARE_WARNING = 0.1
_MIN_UNSEEN = 5
#: the columns of the score output, after the ID columns; an ID column may not take these names
OUTPUT_COLUMNS = ("row", "score", "p_value", "is_anomaly", "top_features", "top_metrics")
#: the kinds of a categorical column's values (:func:`value_kind`)
VALUE_KINDS = ("text", "integer", "boolean")
_BOOLEAN_CODES = {"1": "true", "0": "false"}


def column_names(arg: Iterable[str] | str | None) -> list[str]:
    """Column names given as a list or as one comma-separated string."""
    if arg is None:
        return []
    if isinstance(arg, str):
        return [c.strip() for c in arg.split(",") if c.strip()]
    return list(arg)


def infer_roles(arrow_schema, *, exclude=None, id_columns=None, categorical=None, name: str = "X") -> dict:
    """Column roles and kinds from a table's column types (no data read): a schema whose
    categorical features have no vocabulary yet (:func:`build_schema` adds them).

    Parameters
    ----------
    arrow_schema : the pyarrow schema of the table.
    exclude : columns ignored at fit and at score (list, or "a,b").
    id_columns : columns that are never features, carried into the score output.
    categorical : integer columns to model as categories.
    name : how the table is named in errors.

    Raises
    ------
    InputValidationError : duplicated column names; a named column the table lacks; a column in
        two roles; a date/time, binary or nested column left as a feature; no feature left.
    """
    pa = load_pyarrow()
    names = list(arrow_schema.names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputValidationError(f"{name}: column name {dupes[0]!r} appears more than once; expected unique "
                                   "names. Rename the columns.")
    exclude, ids, cats = column_names(exclude), column_names(id_columns), column_names(categorical)
    for flag, given in (("--exclude", exclude), ("--id-columns", ids), ("--categorical", cats)):
        unknown = [c for c in given if c not in names]
        if unknown:
            raise InputValidationError(f"{flag}: {name} has no column {unknown[0]!r}; its columns are "
                                       f"{', '.join(map(repr, names[:12]))}{' ...' if len(names) > 12 else ''}.")
    check_output_names(ids, name)
    both = sorted(set(exclude) & set(ids) | (set(exclude) | set(ids)) & set(cats))
    if both:
        raise InputValidationError(f"{name}: column {both[0]!r} is given two roles (--exclude, --id-columns, "
                                   "--categorical); expected one.")
    numeric, categorical_features = [], []
    for field in arrow_schema:
        col, t = field.name, field.type
        if col in exclude or col in ids:
            continue
        if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t) \
                or pa.types.is_boolean(t) or col in cats:
            if col in cats and not (pa.types.is_integer(t) or pa.types.is_dictionary(t) or pa.types.is_string(t)
                                    or pa.types.is_large_string(t) or pa.types.is_boolean(t)):
                raise InputValidationError(f"--categorical: column {col!r} of {name} holds {t}; expected integer "
                                           "codes or text.")
            categorical_features.append({"name": col, "kind": "categorical"})
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
            numeric.append({"name": col, "kind": "numeric"})
        elif pa.types.is_temporal(t):
            raise InputValidationError(
                f"{name}: column {col!r} holds dates/times ({t}); a time column is never a feature. Pass "
                f"--id-columns {col} to carry it into the output, or --exclude {col}.")
        else:
            raise InputValidationError(f"{name}: column {col!r} holds {t}; expected numbers or text. Pass "
                                       f"--exclude {col}.")
    if not numeric and not categorical_features:
        raise InputValidationError(f"{name}: no feature column left; expected at least one column that is "
                                   "neither excluded nor an ID column.")
    return {"features": numeric + categorical_features, "id_columns": ids, "exclude": exclude}


def read_types(schema: dict, *, with_ids: bool = True) -> dict:
    """{column: pyarrow type} to read a CSV with: numeric features float64, categorical features and
    ID columns text (so a category or an ID is kept as written)."""
    pa = load_pyarrow()
    types = {f["name"]: pa.float64() if f["kind"] == "numeric" else pa.string() for f in schema["features"]}
    if with_ids:
        types.update({c: pa.string() for c in schema["id_columns"]})
    return types


def build_schema(table, roles: dict, *, name: str = "X") -> dict:
    """The schema: ``roles`` (from :func:`infer_roles`) with each categorical feature's categories,
    the sorted distinct non-missing values of ``table`` as text.

    Raises
    ------
    InputValidationError : a categorical column with too many distinct values (more than
        :data:`MAX_CATEGORIES`, or more than half of its values when it has 20 or more), or with
        no value at all.
    """
    pa = load_pyarrow()
    features = []
    for f in roles["features"]:
        if f["kind"] == "categorical":
            column = table.column(f["name"])
            kind = value_kind(column)
            values = category_text(column, kind)
            present = int(len(values) - values.null_count)
            vocab = sorted(v for v in arrow_compute().unique(values).to_pylist() if v is not None)
            limit = MAX_CATEGORIES if present < _MIN_ROWS_FOR_RATIO else min(MAX_CATEGORIES, present // 2)
            if not vocab or len(vocab) > limit:
                why = "no value" if not vocab else f"{len(vocab)} distinct values in {present} rows"
                raise InputValidationError(
                    f"{name}: column {f['name']!r} holds text with {why}; too many to be a category. Pass "
                    f"--id-columns {f['name']} to carry it into the output, or --exclude {f['name']}.")
            f = {**f, "categories": vocab, "values": kind}
        features.append(f)
    return {**roles, "features": features}


def _as_text(column):
    """A column as pyarrow text (dictionary values decoded, numbers and booleans formatted)."""
    pa = load_pyarrow()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column if pa.types.is_string(column.type) else arrow_compute().cast(column, pa.string())


def _integer_text(value: str) -> str | None:
    """An integer's canonical text: '007' -> '7', ' 3 ' -> '3', '2.0' -> '2', 'true' -> '1';
    None for anything that is not an integer."""
    text = value.strip()
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return {"true": "1", "false": "0"}.get(text.lower())
    return str(int(number)) if math.isfinite(number) and number == int(number) else None


def _boolean_text(value: str) -> str | None:
    """A boolean's canonical text: 'True', 'TRUE', 'true', '1', '01', '1.0' -> 'true'; 'False', ...,
    '0' -> 'false'; None for anything else."""
    text = value.strip().lower()
    return text if text in ("true", "false") else _BOOLEAN_CODES.get(_integer_text(text))


_CANONICAL = {"integer": _integer_text, "boolean": _boolean_text}


def value_kind(column) -> str:
    """The kind of a categorical column's values at fit (one of :data:`VALUE_KINDS`): "boolean" for a
    boolean column, or text whose every value is true/false in any case (or 0/1); "integer" for an
    integer column, or text whose every value is an integer ("01", "2", "10.0"); else "text"."""
    pa = load_pyarrow()
    t = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    values = [v for v in arrow_compute().unique(_as_text(column)).to_pylist() if v is not None]
    for kind in ("boolean", "integer"):
        if values and all(_CANONICAL[kind](v) is not None for v in values):
            return kind
    return "text"


def category_text(column, kind: str = "text"):
    """The one gate from a column's values to category text (pyarrow string array, nulls kept).

    ``kind`` (a feature's recorded ``"values"``, :func:`value_kind`): "text" keeps text as written
    and formats numbers and booleans as pyarrow does (3 -> "3", true -> "true"); "integer" writes
    each integer canonically ("01", 1, 1.0 -> "1"), "boolean" each boolean ("True", true, "1" ->
    "true"); a value that is not of the kind stays as written (an unseen category).
    """
    pa = load_pyarrow()
    text = _as_text(column)
    if kind == "text":
        return text
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    encoded = arrow_compute().dictionary_encode(text)
    canonical = _CANONICAL[kind]
    written = [canonical(v) or v for v in encoded.dictionary.to_pylist()]
    return pa.array(written, pa.string()).take(encoded.indices)


def feature_names(schema: dict) -> list[str]:
    """The features' names, in the graph's order."""
    return [f["name"] for f in schema["features"]]


def categories(schema: dict) -> tuple[int, ...]:
    """K for each categorical feature, in the graph's order."""
    return tuple(len(f["categories"]) for f in schema["features"] if f["kind"] == "categorical")


def _slots(feature: dict) -> int:
    """Columns of the encoded matrix a feature takes: 1 if numeric, K + 1 if categorical."""
    return 1 if feature["kind"] == "numeric" else len(feature["categories"]) + 1


def width(schema: dict) -> int:
    """Columns of the encoded matrix: one per numeric feature, K + 1 per categorical one."""
    return sum(_slots(f) for f in schema["features"])


def term_starts(schema: dict) -> np.ndarray:
    """Each feature's first column in the encoded matrix (int64, (n_features_in_schema,))."""
    sizes = [_slots(f) for f in schema["features"]]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def slot_names(schema: dict) -> list[str]:
    """A name for each column of the encoded matrix: the feature's name, or ``name=category`` (and
    ``name=<unseen>`` for a block's last slot)."""
    out = []
    for f in schema["features"]:
        out += [f["name"]] if f["kind"] == "numeric" else \
            [f"{f['name']}={c}" for c in f["categories"]] + [f"{f['name']}=<unseen>"]
    return out


def slot_columns(schema: dict) -> list[str]:
    """The feature each column of the encoded matrix belongs to (a categorical block's K + 1 slots
    share its name)."""
    return [f["name"] for f in schema["features"] for _ in range(_slots(f))]


def positional(names: list[str]) -> dict:
    """The schema of a table read by position: every column numeric."""
    return {"features": [{"name": c, "kind": "numeric"} for c in names], "id_columns": [], "exclude": []}


def needed_columns(schema: dict, *, with_ids: bool = True) -> list[str]:
    """The columns read to score: the features, then the ID columns."""
    return feature_names(schema) + (list(schema["id_columns"]) if with_ids else [])


def encode(table, schema: dict, *, name: str = "X", first_row: int = 0, allow_missing: bool = False) -> np.ndarray:
    """A table's rows as the model's input matrix.

    Parameters
    ----------
    table : pyarrow Table holding (at least) the schema's feature columns, matched by name.
    schema : the model's ``table`` schema.
    name : how the table is named in errors.
    first_row : added to row numbers in messages (the table is a chunk starting there).
    allow_missing : keep missing and infinite values (NaN in the matrix, for the caller's
        ``nan_policy="flag"``); by default the first is refused, naming its column and row.

    Returns
    -------
    ndarray, float64, shape (n_rows, :func:`width`), laid out as the module docstring says; a
    category not seen in training sets the block's last slot.

    Raises
    ------
    InputValidationError : a missing feature column (named), or one the table holds twice (names
        are compared after Unicode NFC, :func:`~vae_anomaly.deploy.tables.column_map`); text in a
        numeric column (column and row named); a missing or infinite value when not allowed (column
        and row named).
    """
    pa = load_pyarrow()
    table = select_columns(table, feature_names(schema), name)
    missing = [c for c in feature_names(schema) if c not in table.column_names]
    if missing:
        raise InputValidationError(
            f"{name}: no column {missing[0]!r}; the model was fitted on {', '.join(map(repr, feature_names(schema)))}. "
            "Score a table with the same columns (in any order).")
    n = table.num_rows
    out = np.zeros((n, width(schema)), dtype=np.float64)
    j = 0
    for f in schema["features"]:
        column = table.column(f["name"])
        if f["kind"] == "numeric":
            values = _as_float(column, f["name"], name, first_row)
            out[:, j] = values
            j += 1
            continue
        k = len(f["categories"])
        text = category_text(column, f.get("values", "text"))
        idx = arrow_compute().index_in(text, value_set=pa.array(f["categories"], pa.string()))
        absent = to_numpy(text.is_null(), bool)
        idx = to_numpy(idx, np.int64, fill=k)  # unseen -> slot k
        _warn_if_mostly_unseen(idx == k, absent, text, f["name"], name)
        out[np.arange(n), j + idx] = 1.0
        out[absent, j : j + k + 1] = np.nan
        j += k + 1
    if not allow_missing:
        _refuse_missing(out, schema, name, first_row)
    return out


def _warn_if_mostly_unseen(unseen: np.ndarray, absent: np.ndarray, text, col: str, name: str) -> None:
    """Warn when more than :data:`UNSEEN_SHARE_WARNING` of a column's present values are categories
    never seen in training (the calibration rows hold none): most often a column written another way."""
    n_unseen, present = int(np.count_nonzero(unseen & ~absent)), int(np.count_nonzero(~absent))
    if n_unseen >= _MIN_UNSEEN and n_unseen > UNSEEN_SHARE_WARNING * present:
        example = text[int(np.flatnonzero(unseen & ~absent)[0])].as_py()
        warnings.warn(f"{name}: column {col!r}: {n_unseen} of {present} values ({n_unseen / present:.0%}) are "
                      f"categories never seen in training (e.g. {example!r}), against none of the calibration "
                      "rows'; they score as anomalous. Check that the column holds the same kind of values as "
                      "the fitted one.", stacklevel=4)


def _as_float(column, col: str, name: str, first_row: int) -> np.ndarray:
    """A numeric column as float64 (nulls -> NaN); text that is not a number is refused."""
    pa = load_pyarrow()
    try:
        values = column if pa.types.is_floating(column.type) else arrow_compute().cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i, v in enumerate(column.to_pylist()):
            try:
                float(v) if v is not None else None
            except (TypeError, ValueError):
                raise InputValidationError(
                    f"{name}: column {col!r}, data row {first_row + i}, holds {str(v)[:40]!r}; expected a number "
                    f"({col!r} is a numeric feature of the model).") from None
        raise InputValidationError(f"{name}: column {col!r} holds {column.type}; expected numbers.") from None
    return to_numpy(values, np.float64, fill=np.nan)


def _refuse_missing(out: np.ndarray, schema: dict, name: str, first_row: int) -> None:
    """InputValidationError naming the first (row, column) of ``out`` holding NaN or ±inf."""
    bad = ~np.isfinite(out[:, term_starts(schema)])
    if bad.any():
        r, c = np.argwhere(bad)[0]
        value = out[r, term_starts(schema)[c]]
        what = "is empty (a missing value)" if np.isnan(value) else f"holds {value}"
        raise InputValidationError(
            f"{name}: column {schema['features'][c]['name']!r}, data row {first_row + int(r)}, {what}; expected a "
            f"finite value. Fill or drop the {int(bad.any(axis=1).sum())} such rows, or score with --nan-policy "
            "flag (they are reported anomalous).")


def id_values(table, schema: dict, *, name: str = "X"):
    """The schema's ID columns of ``table`` (a pyarrow Table, values as stored), or None without any.

    Raises
    ------
    InputValidationError : an ID column the table lacks.
    """
    ids = list(schema["id_columns"])
    if not ids:
        return None
    table = select_columns(table, ids, name)
    missing = [c for c in ids if c not in table.column_names]
    if missing:
        raise InputValidationError(f"{name}: no ID column {missing[0]!r}; the model carries "
                                   f"{', '.join(map(repr, ids))} into the output. Score a table that has them.")
    return table.select(ids)


def check_output_names(columns: list[str], name: str = "X") -> None:
    """Refuse ID (and time) columns named as a column of the score output (:data:`OUTPUT_COLUMNS`),
    which they would clobber: checked at fit, and again when scores are written.

    Raises
    ------
    InputValidationError : such a column, named, with the fix (rename it).
    """
    taken = [c for c in columns if c in OUTPUT_COLUMNS]
    if taken:
        raise InputValidationError(
            f"{name}: ID column {taken[0]!r} has the name of a score output column ({', '.join(OUTPUT_COLUMNS)}); "
            "expected other names. Rename the column (and re-fit).")
