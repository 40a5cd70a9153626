"""Reading tables: CSV through pyarrow's CSV reader, Parquet through pyarrow, DataFrames and records.

Every reader yields :class:`pyarrow.Table` chunks of at most ``chunk_rows`` rows, so memory is set
by the chunk, not by the file; :mod:`vae_anomaly.deploy.schema` turns them into the model's input.

CSV as users write it (pyarrow's reader, never our own parser): a header row by default
(``header=False`` names the columns ``f0, f1, ...``); UTF-8 with or without a byte-order mark;
quoted fields; CRLF or LF line ends; ``,`` ``;`` or tab, detected from the first 64 KiB by
:class:`csv.Sniffer` or given. Empty cells, ``NA``, ``N/A``, ``NaN``, ``null`` and ``NULL`` are
missing values (null), the same as Parquet nulls and pandas' NA/None/NaN. ``true``/``false`` are
kept as text (a categorical value as written), never guessed to be booleans.

Errors are :class:`~vae_anomaly.errors.InputValidationError` with one line naming the file, the
column and, where the reader knows it, the row.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputValidationError

#: cells read as missing values in a CSV
NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
#: table files (anything else is read as a matrix by :mod:`vae_anomaly.deploy.io`)
TABLE_SUFFIXES = (".csv", ".parquet")
_SNIFF_BYTES = 65536


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is laid out.

    Attributes
    ----------
    header : the first row holds the column names (False: columns are named f0, f1, ...).
    delimiter : the field separator; None = detect ``,`` ``;`` or tab from the start of the file.
    """

    header: bool = True
    delimiter: str | None = None


#: a header row, the delimiter detected
DEFAULT_CSV = CsvFormat()


def load_pyarrow():
    """pyarrow (imported when a table is read, not with the package); its compute functions are
    :func:`arrow_compute`'s."""
    import pyarrow as pa

    return pa


def arrow_compute():
    """``pyarrow.compute``, imported on first use: building its function wrappers takes about a
    tenth of a second, which a numeric CSV's ``score`` does not need."""
    import pyarrow.compute as pc

    return pc


def to_numpy(values, dtype, fill=0) -> np.ndarray:
    """A pyarrow Array or ChunkedArray of numbers or booleans as a 1-D numpy array of ``dtype``
    (float64, int64 or bool), nulls replaced by ``fill``.

    Through DLPack rather than pyarrow's ``to_numpy``, which imports pandas (a third of a second of
    a small ``score``).
    """
    pa = load_pyarrow()
    dtype = np.dtype(dtype)
    arrow_type = pa.uint8() if dtype == np.bool_ else pa.from_numpy_dtype(dtype)
    if values.type != arrow_type or values.null_count:
        values = arrow_compute().cast(values, arrow_type)
        if values.null_count:
            values = values.fill_null(pa.scalar(fill, arrow_type))
    chunks = [np.from_dlpack(c) for c in getattr(values, "chunks", [values]) if len(c)]
    return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.empty(0, dtype)


def detect_delimiter(path: Path, fmt: CsvFormat) -> str:
    """The delimiter of ``path``: ``fmt.delimiter`` if given, else the standard library's
    :class:`csv.Sniffer` over the first 64 KiB among ``,`` ``;`` and tab (``,`` when it cannot tell)."""
    if fmt.delimiter is not None:
        if len(fmt.delimiter) != 1 or fmt.delimiter in "\"\r\n":
            raise InputValidationError(f"--delimiter: got {fmt.delimiter!r}; expected one character such as , ; or tab.")
        return fmt.delimiter
    with path.open("rb") as f:
        sample = f.read(_SNIFF_BYTES).decode("utf-8-sig", errors="ignore")
    if len(sample) == _SNIFF_BYTES:  # a cut line would confuse the sniffer
        sample = sample[: sample.rfind("\n") + 1] or sample
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"{p}: file not found; expected an existing .csv or .parquet file.")
    return p


def _csv_error(p: Path, e: Exception, names: list[str] | None, fmt: CsvFormat = DEFAULT_CSV) -> InputValidationError:
    """One line for a pyarrow CSV error, naming the column where pyarrow says which one."""
    text = str(e).splitlines()[0]
    m = re.match(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to \w+: invalid value '(.*)'", text)
    if m and names is not None and int(m.group(1)) < len(names):
        col = names[int(m.group(1))]
        where = _find_cell(p, fmt, col, m.group(2))
        return InputValidationError(
            f"{p}: column {col!r}{where} holds {m.group(2)[:40]!r}; expected a number ({col!r} is a numeric "
            "column). Fix the cell, or make the column categorical (fit --categorical).")
    if "Empty CSV file" in text:
        return InputValidationError(f"{p}: empty file; expected a CSV with a header row and data rows.")
    m = re.match(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+): (.*)", text)
    if m and not m.group(1) and p.is_file():  # only the single-threaded reader numbers the rows
        import pyarrow.csv as pcsv

        try:
            pcsv.open_csv(p, **_csv_options(fmt, detect_delimiter(p, fmt), None, None, threads=False)).read_all()
        except load_pyarrow().ArrowException as again:
            m = re.match(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+): (.*)",
                         str(again).splitlines()[0]) or m
    if m:  # pyarrow counts the file's lines from 1, the header included
        where = f"data row {int(m.group(1)) - 1 - fmt.header}" if m.group(1) else "a row"
        return InputValidationError(
            f"{p}: {where} has {m.group(3)} cells; expected {m.group(2)} like the first row: {m.group(4)[:60]!r}. "
            "Fix the ragged row (a field holding the delimiter must be quoted).")
    return InputValidationError(f"{p}: cannot read as CSV ({text[:160]}).")


def _find_cell(p: Path, fmt: CsvFormat, column: str, value: str) -> str:
    """", data row N" for the first cell of ``column`` equal to ``value`` (pyarrow's conversion error
    names the column and the value, not the row), or "" when it cannot be found."""
    pa = load_pyarrow()
    done = 0
    try:
        for table in _iter_csv_batches(p, 1 << 16, fmt, {column: pa.string()}, [column]):
            hits = arrow_compute().equal(table.column(0), value)
            idx = arrow_compute().index(hits, True).as_py()
            if idx >= 0:
                return f", data row {done + idx},"
            done += table.num_rows
    except InputValidationError:
        pass
    return ""


def csv_columns(path: str | os.PathLike, fmt: CsvFormat = DEFAULT_CSV) -> list[str]:
    """The column names of a CSV file (from its header, or f0, f1, ... without one)."""
    return list(file_schema(path, fmt).names)


def file_schema(path: str | os.PathLike, fmt: CsvFormat = DEFAULT_CSV):
    """The pyarrow schema of a .csv file (types inferred from its first MiB) or a .parquet file (as stored).

    Raises
    ------
    InputValidationError : a missing or unreadable file.
    """
    pa = load_pyarrow()
    p = _check_file(path)
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(p).schema_arrow
        except (pa.ArrowException, OSError) as e:
            raise InputValidationError(f"{p}: not a readable Parquet file ({str(e)[:120]}).") from None
    return _open_csv(p, fmt, None).schema


#: pyarrow's CSV block: at least 1 MiB, and more than the first line (a header longer than a block
#: cannot be read)
_BLOCK_BYTES = 1 << 20


def _block_size(first_line_bytes: int) -> int:
    """A CSV read block that holds the first line twice over (at least :data:`_BLOCK_BYTES`)."""
    return max(_BLOCK_BYTES, 2 * first_line_bytes + 2)


def _first_line_bytes(p: Path) -> int:
    """The length of a file's first line in bytes (the whole file's when it has one line)."""
    n = 0
    with p.open("rb") as f:
        while chunk := f.read(_BLOCK_BYTES):
            end = chunk.find(b"\n")
            if end >= 0:
                return n + end
            n += len(chunk)
    return n


def _csv_options(fmt: CsvFormat, delimiter: str, column_types: dict | None, columns: list[str] | None,
                 threads: bool = True, block_size: int = _BLOCK_BYTES):
    import pyarrow.csv as pcsv

    return dict(read_options=pcsv.ReadOptions(autogenerate_column_names=not fmt.header, block_size=block_size,
                                                     use_threads=threads),
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=pcsv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True,
                                                    true_values=[], false_values=[], column_types=column_types or {},
                                                    include_columns=columns or []))


def read_csv_bytes(data: bytes, label: str, fmt: CsvFormat = CsvFormat(delimiter=","), *,
                   column_types: dict | None = None):
    """An in-memory CSV payload (e.g. an HTTP body) as one pyarrow Table, read as files are
    (``column_types``: {column: pyarrow type}, the others inferred from every row: the payload is
    read as one block).

    Raises
    ------
    InputValidationError : unreadable CSV (``label`` names it); a typed column it holds twice.
    """
    pa = load_pyarrow()
    import pyarrow.csv as pcsv

    delimiter = fmt.delimiter or ","
    try:
        if column_types and fmt.header:  # keyed by the payload's spellings of the names (column_map)
            end = data.find(b"\n")
            header = data if end < 0 else data[: end + 1]
            names = pcsv.read_csv(pa.BufferReader(header), **_csv_options(
                fmt, delimiter, None, None, block_size=_block_size(len(header)))).column_names
            found = column_map(names, list(column_types), label)
            column_types = {found.get(c, c): t for c, t in column_types.items()}
        # one block holds the whole payload, so the types pyarrow infers come from every row
        return pcsv.read_csv(pa.BufferReader(data), **_csv_options(
            fmt, delimiter, column_types, None, block_size=_block_size(len(data))))
    except pa.ArrowException as e:
        raise _csv_error(Path(label), e, None, fmt) from None


def _open_csv(p: Path, fmt: CsvFormat, column_types: dict | None, columns: list[str] | None = None):
    pa = load_pyarrow()
    import pyarrow.csv as pcsv

    try:
        return pcsv.open_csv(p, **_csv_options(fmt, detect_delimiter(p, fmt), column_types, columns,
                                               block_size=_block_size(_first_line_bytes(p))))
    except (pa.ArrowException, OSError) as e:
        names = csv_columns(p, fmt) if column_types and "conversion error" in str(e) else None
        raise _csv_error(p, e, names, fmt) from None


def _rebatch(batches: Iterator, chunk_rows: int, schema) -> Iterator:
    """Record batches regrouped into tables of exactly ``chunk_rows`` rows (the last may be shorter);
    at least one table, empty for an input without rows."""
    pa = load_pyarrow()
    pending, n, emitted = [], 0, False
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, chunk_rows - n)
            pending.append(batch.slice(0, take))
            batch, n = batch.slice(take), n + take
            if n == chunk_rows:
                yield pa.Table.from_batches(pending, schema)
                pending, n, emitted = [], 0, True
    if pending or not emitted:
        yield pa.Table.from_batches(pending, schema)


def _batches(reader):
    """The reader's batches until it is exhausted."""
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def iter_parquet(path: str | os.PathLike, chunk_rows: int, *, columns: list[str] | None = None) -> Iterator:
    """A Parquet file as pyarrow Tables of ``chunk_rows`` rows (``ParquetFile.iter_batches``).

    Raises
    ------
    InputValidationError : unreadable file, or a listed column the file lacks.
    """
    pa = load_pyarrow()
    import pyarrow.parquet as pq

    p = _check_file(path)
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as e:
        raise InputValidationError(f"{p}: not a readable Parquet file ({str(e)[:120]}).") from None
    if columns is None:
        yield from _rebatch(pf.iter_batches(batch_size=chunk_rows), chunk_rows, pf.schema_arrow)
        return
    actual = list(_file_columns(p, pf.schema_arrow.names, columns).values())
    schema = pa.schema([pf.schema_arrow.field(c) for c in actual])
    for table in _rebatch(pf.iter_batches(batch_size=chunk_rows, columns=actual), chunk_rows, schema):
        yield table.rename_columns(columns)


def iter_table(path: str | os.PathLike, chunk_rows: int, fmt: CsvFormat = DEFAULT_CSV, *,
               column_types: dict | None = None, columns: list[str] | None = None) -> Iterator:
    """A .csv or .parquet file as pyarrow Tables of ``chunk_rows`` rows (``column_types`` applies
    to CSV; a Parquet file keeps its stored types)."""
    if Path(path).suffix.lower() == ".parquet":
        return iter_parquet(path, chunk_rows, columns=columns)
    return _iter_csv_batches(path, chunk_rows, fmt, column_types, columns)


def _iter_csv_batches(path, chunk_rows, fmt, column_types, columns):
    """CSV tables of ``chunk_rows`` rows; ``column_types`` {name: pyarrow type} fixes known columns'
    types (the others are inferred from the first MiB); ``columns`` reads only those, in order."""
    pa = load_pyarrow()
    p = _check_file(path)
    actual = None
    if columns is not None:  # read the file's spellings, named as the model names them
        found = _file_columns(p, csv_columns(p, fmt), columns)
        actual = list(found.values())
        column_types = column_types and {found.get(c, c): t for c, t in column_types.items()}
    reader = _open_csv(p, fmt, column_types, actual)
    try:
        for table in _rebatch(_batches(reader), chunk_rows, reader.schema):
            yield table if columns is None else table.rename_columns(columns)
    except pa.ArrowException as e:  # pyarrow numbers the file's columns
        raise _csv_error(p, e, csv_columns(p, fmt), fmt) from None


def read_table(path: str | os.PathLike, fmt: CsvFormat = DEFAULT_CSV, *, column_types: dict | None = None,
               columns: list[str] | None = None):
    """A whole .csv or .parquet file as one pyarrow Table (see :func:`iter_table`)."""
    pa = load_pyarrow()
    return pa.concat_tables(list(iter_table(path, 1 << 20, fmt, column_types=column_types, columns=columns)))


def as_table(data, name: str = "X"):
    """A pandas DataFrame, a pyarrow Table or a list of records ({column: value} dicts) as a pyarrow Table.

    Raises
    ------
    InputValidationError : a column pyarrow cannot type (e.g. numbers mixed with text), or
        records that are not dicts.
    """
    pa = load_pyarrow()
    if isinstance(data, pa.Table):
        return data
    try:
        if isinstance(data, list):
            if not all(isinstance(r, dict) for r in data):
                raise InputValidationError(f"{name}: records must be objects {{column: value}}; got "
                                           f"{type(next(r for r in data if not isinstance(r, dict))).__name__}.")
            return pa.Table.from_pylist(data)
        return pa.Table.from_pandas(data, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise InputValidationError(f"{name}: cannot read as a table ({str(e).splitlines()[0][:160]}); "
                                   "expected one type per column.") from None


def is_table(data) -> bool:
    """Whether ``data`` is a table (pandas DataFrame, pyarrow Table or a list of dict records), not a matrix."""
    if isinstance(data, list):
        return bool(data) and isinstance(data[0], dict)
    module = type(data).__module__
    return (module.startswith("pandas") and type(data).__name__ == "DataFrame") or \
        (module.startswith("pyarrow") and type(data).__name__ == "Table")


def column_map(names: list[str], wanted: list[str], label: str = "X") -> dict[str, str]:
    """The one gate for column names: {wanted name: the name as the table writes it} for each wanted
    column the table has (absent ones are left out, for the caller to name), compared after
    Unicode NFC, so an "é" typed as "e" and a combining accent is the model's "é".

    Raises
    ------
    InputValidationError : a wanted column the table holds more than once (a scored file with a
        repeated name is refused, as at fit).
    """
    spellings: dict[str, list[str]] = {}
    for n in names:
        spellings.setdefault(unicodedata.normalize("NFC", n), []).append(n)
    found = {}
    for w in wanted:
        there = spellings.get(unicodedata.normalize("NFC", w), [])
        if len(there) > 1:
            raise InputValidationError(f"{label}: column {w!r} appears {len(there)} times; expected each column "
                                       "the model reads once. Rename or drop the copies.")
        if there:
            found[w] = there[0]
    return found


def select_columns(table, wanted: list[str], label: str = "X"):
    """The wanted columns of a pyarrow Table that it has (:func:`column_map`), named as wanted."""
    found = column_map(table.column_names, wanted, label)
    return table.select([table.column_names.index(a) for a in found.values()]).rename_columns(list(found))


def _file_columns(p: Path, names: list[str], columns: list[str]) -> dict[str, str]:
    """:func:`column_map` of a file's columns, refusing an absent one (named)."""
    found = column_map(names, columns, str(p))
    missing = [c for c in columns if c not in found]
    if missing:
        raise InputValidationError(
            f"{p}: no column {missing[0]!r}; the file has {_list(names)}. The model needs {_list(columns)}.")
    return found


def _list(names: list[str], k: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")
