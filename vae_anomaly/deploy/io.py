"""Reading input matrices and writing files atomically (numpy only, never pickle).

Readers return the array as stored (any numeric dtype); :func:`vae_anomaly.deploy.validation.check_array`
turns it into the float32 C-ordered (n_rows, n_features) matrix the model takes. Every reader
raises :class:`~vae_anomaly.errors.InputValidationError` with a one-line message naming the file.

Every file vae-anomaly writes goes through :func:`atomic_write`: a temporary file in the
destination folder, flushed and fsync-ed, then ``os.replace``-d over the destination, so a reader
sees either the old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from ..errors import InputValidationError, OutputWriteError
from . import schema, tables
from .tables import DEFAULT_CSV, CsvFormat
from .validation import NUMERIC_KINDS

#: readable inputs
STREAM_SUFFIXES = (".npy", ".npz", ".csv", ".parquet")


def read_matrix(path: str | os.PathLike, fmt: CsvFormat = DEFAULT_CSV) -> np.ndarray:
    """Read a numeric matrix from ``.npy``, ``.npz`` or ``.csv``.

    Parameters
    ----------
    path : path to a ``.npy`` file (a numeric array), a ``.npz`` archive (array ``X``, or its only
        array), a ``.csv`` file of numbers or a ``.parquet`` file of numeric columns, read by
        position (:mod:`vae_anomaly.deploy.tables`; empty cells are NaN).
    fmt : a CSV's header and delimiter.

    Returns
    -------
    ndarray of any numeric dtype, as stored (shape not yet checked).

    Raises
    ------
    InputValidationError
        Missing file, unsupported suffix, object/string dtype (never unpickled), a header that
        disagrees with the file size, or a non-numeric CSV cell (column and row named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"{p}: file not found; expected an existing {', '.join(STREAM_SUFFIXES)} file.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _read_npy(p)
    if suffix == ".npz":
        return _read_npz(p)
    if suffix in (".csv", ".parquet"):
        return np.concatenate(list(_iter_table_matrix(p, 1 << 20, fmt)))
    raise InputValidationError(
        f"{p}: unsupported file type {suffix or '(none)'!r}; expected one of "
        f"{', '.join(STREAM_SUFFIXES)}. Convert the data to one of these formats."
    )


def read_fit_table(path: str | os.PathLike, fmt: CsvFormat = DEFAULT_CSV, *, exclude=None, id_columns=None,
                   categorical=None) -> tuple[np.ndarray, dict]:
    """A .csv or .parquet training file as the model's input matrix and its table schema.

    The column roles come from the file's types (:func:`vae_anomaly.deploy.schema.infer_roles`),
    the file is read with them (numbers as float64, categories as text), each categorical column's
    categories are its distinct values, and the rows are encoded
    (:func:`vae_anomaly.deploy.schema.encode`).

    Returns
    -------
    (ndarray float64 (n_rows, width), schema dict)

    Raises
    ------
    InputValidationError : see :func:`~vae_anomaly.deploy.schema.infer_roles`,
        :func:`~vae_anomaly.deploy.schema.build_schema` and :func:`~vae_anomaly.deploy.schema.encode`;
        a missing value in a training row (column and row named).
    """
    roles = schema.infer_roles(tables.file_schema(path, fmt), exclude=exclude, id_columns=id_columns,
                               categorical=categorical, name=str(path))
    table = tables.read_table(path, fmt, column_types=schema.read_types(roles, with_ids=False),
                              columns=schema.feature_names(roles))
    spec = schema.build_schema(table, roles, name=str(path))
    return schema.encode(table, spec, name=str(path)), spec


def read_table_rows(path: str | os.PathLike, spec: dict, fmt: CsvFormat = DEFAULT_CSV) -> np.ndarray:
    """A .csv or .parquet file's rows encoded with a fitted table schema (float64, (n_rows, width));
    columns matched by name. Raises InputValidationError as :func:`vae_anomaly.deploy.schema.encode`."""
    table = tables.read_table(path, fmt, column_types=schema.read_types(spec, with_ids=False),
                              columns=schema.feature_names(spec))
    return schema.encode(table, spec, name=str(path))


def read_rows(path: str | os.PathLike, fmt: CsvFormat = DEFAULT_CSV, *, table: dict | None = None):
    """A whole input file as ``score`` reads it for a model: with the model's ``table`` schema, a .csv
    or .parquet file as a pyarrow Table of its feature columns, matched by name and read with the
    schema's types (categories as text, numbers float64); anything else by position, as
    :func:`read_matrix` reads it."""
    if table is not None and Path(path).suffix.lower() in tables.TABLE_SUFFIXES:
        return tables.read_table(path, fmt, column_types=schema.read_types(table, with_ids=False),
                                 columns=schema.feature_names(table))
    return read_matrix(path, fmt)


def _check_dtype(label: str, dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in NUMERIC_KINDS:
        raise InputValidationError(
            f"{label}: array has dtype {dtype}; expected a numeric dtype (bool, int or float). "
            "Object, string, complex, structured and datetime arrays are refused."
        )


def _check_npy_header(f: IO[bytes], size: int, label: str) -> tuple[tuple, bool, np.dtype]:
    """Read a .npy header from ``f`` and check dtype and declared size against ``size`` bytes.

    Nothing is allocated from the header: a 200-byte file that declares 10^12 rows is refused here.
    """
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # pragma: no cover - numpy knows only these
            raise ValueError(f"unknown format version {version}")
        offset = f.tell()
    except (ValueError, OSError, EOFError, OverflowError, SyntaxError, TypeError) as e:
        raise InputValidationError(
            f"{label}: not a valid .npy array ({str(e)[:120]}); expected an array written by numpy.save."
        ) from None
    _check_dtype(label, dtype)
    expected = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if expected != size:
        raise InputValidationError(
            f"{label}: header declares shape {shape} of {dtype} ({expected} bytes with the header) but "
            f"there are {size} bytes; the file is truncated or corrupted. Re-create it."
        )
    return shape, fortran, dtype


def _read_npy(p: Path) -> np.ndarray:
    """Check the header against the file size before allocating anything, then load."""
    with p.open("rb") as f:
        _check_npy_header(f, p.stat().st_size, str(p))
    return np.load(p, allow_pickle=False)


def parse_matrix_bytes(data: bytes, kind: str, label: str) -> np.ndarray:
    """Parse an in-memory ``.npy`` or ``.csv`` payload with the same checks as the file readers.

    Parameters
    ----------
    data : the payload.
    kind : "npy" or "csv".
    label : how the payload is named in errors.

    Raises
    ------
    InputValidationError
    """
    if kind == "npy":
        _check_npy_header(io.BytesIO(data), len(data), label)
        return np.load(io.BytesIO(data), allow_pickle=False)
    table = tables.read_csv_bytes(data, label)
    return schema.encode(table, schema.positional(table.column_names), name=label, allow_missing=True)


def _read_npz(p: Path) -> np.ndarray:
    """Pick array X (or the only array) and check its header like a .npy file before reading it."""
    try:
        with zipfile.ZipFile(p) as archive:
            members = {i.filename[: -len(".npy")]: i for i in archive.infolist() if i.filename.endswith(".npy")}
            if "X" in members:
                info = members["X"]
            elif len(members) == 1:
                info = next(iter(members.values()))
            else:
                raise InputValidationError(
                    f"{p}: archive holds arrays {sorted(members)}; expected an array named 'X' or exactly "
                    "one array. Re-save it with numpy.savez(path, X=X)."
                )
            label = f"{p}[{info.filename[:-4]}]"
            with archive.open(info) as f:
                _check_npy_header(f, info.file_size, label)
            with archive.open(info) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
    except InputValidationError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputValidationError(
            f"{p}: not a readable .npz archive ({str(e)[:120]}); expected arrays written by numpy.savez."
        ) from None


def iter_matrix_chunks(path: str | os.PathLike, chunk_rows: int = 65536, fmt: CsvFormat = DEFAULT_CSV
                       ) -> Iterator[np.ndarray]:
    """Read a matrix in row chunks, so that memory is set by ``chunk_rows``, not by the file.

    ``.npy`` (C order): the header is checked first, then ``chunk_rows`` rows are read at a time
    into a fresh buffer (no memory map, whose pages would grow resident memory to the file size);
    a Fortran-ordered ``.npy`` is read through a memory map one chunk at a time. ``.csv`` and
    ``.parquet``: pyarrow's readers (:mod:`vae_anomaly.deploy.tables`), columns by position, ``fmt``
    giving a CSV's header and delimiter. ``.npz`` members cannot be streamed and are read whole.

    Yields
    ------
    ndarray chunks in the stored numeric dtype and row shape (a ``.npy`` of images (n, H, W)
    yields (chunk, H, W) chunks), at least one (shapes are checked by the caller's ``check_array``;
    a 0-d or empty ``.npy`` yields one zero-cost view of the declared shape, so the check reports
    it without reading the data).

    Raises
    ------
    InputValidationError : as :func:`read_matrix`.
    """
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"{p}: file not found; expected an existing {', '.join(STREAM_SUFFIXES)} file.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        yield from _iter_npy(p, chunk_rows)
    elif suffix in (".csv", ".parquet"):
        yield from _iter_table_matrix(p, chunk_rows, fmt)
    else:
        arr = read_matrix(p)
        if arr.ndim != 2 or arr.shape[0] == 0:
            yield arr
            return
        for start in range(0, arr.shape[0], chunk_rows):
            yield arr[start : start + chunk_rows]


def _iter_npy(p: Path, chunk_rows: int) -> Iterator[np.ndarray]:
    with p.open("rb") as f:
        shape, fortran, dtype = _check_npy_header(f, p.stat().st_size, str(p))
        if len(shape) == 0 or 0 in shape:
            yield np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=shape, strides=(0,) * len(shape))
            return
        if fortran:
            mm = np.load(p, mmap_mode="r", allow_pickle=False)
            for start in range(0, shape[0], chunk_rows):
                yield np.ascontiguousarray(mm[start : start + chunk_rows])
            return
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for start in range(0, shape[0], chunk_rows):
            n = min(chunk_rows, shape[0] - start)
            yield np.frombuffer(f.read(n * row_bytes), dtype=dtype).reshape(n, *shape[1:])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _iter_table_matrix(p: Path, chunk_rows: int, fmt: CsvFormat) -> Iterator[np.ndarray]:
    """A CSV or Parquet file of numbers, read by position, as float64 chunks (nulls -> NaN).

    A CSV whose first line holds numbers only (``np.savetxt`` writes no header) is read from that
    line as data, with a warning: names are not used by position, and its first row is not lost.
    The header pandas writes for unnamed columns, ``0,1,2,...``, stays a header.
    """
    if p.suffix.lower() == ".csv":
        names = tables.csv_columns(p, fmt)
        pandas_header = names == [str(j) for j in range(len(names))]  # DataFrame(X).to_csv(): 0, 1, 2, ...
        if fmt.header and names and not pandas_header and all(_is_number(n) for n in names):
            warnings.warn(f"{p}: the first line holds numbers only ({', '.join(names[:4])}"
                          f"{', ...' if len(names) > 4 else ''}); read as a data row, not a header. Pass "
                          "--no-header to say the file has none, or name the columns in a header.", stacklevel=2)
            fmt = dataclasses.replace(fmt, header=False)
            names = tables.csv_columns(p, fmt)
        float64 = tables.load_pyarrow().float64()
        chunks = tables.iter_table(p, chunk_rows, fmt, column_types=dict.fromkeys(names, float64))
    else:
        chunks = tables.iter_table(p, chunk_rows)
    for table in chunks:
        positional = schema.positional(table.column_names)
        if len(set(table.column_names)) != table.num_columns:
            raise InputValidationError(f"{p}: column names repeat; expected unique names (or --no-header).")
        yield schema.encode(table, positional, name=str(p), allow_missing=True) if table.num_columns \
            else np.empty((table.num_rows, 0))


def check_output_folder(path: str | os.PathLike) -> Path:
    """Return ``path``'s folder, or raise OutputWriteError if it does not exist (exit 5)."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise OutputWriteError(
            f"{dest}: folder {folder} does not exist; expected an existing folder. Create it first."
        )
    return folder


def scores_csv_header(top: str | None = None) -> str:
    """The header line of the scores CSV (without ID columns); ``top`` names the attribution column."""
    return "row,score,p_value,is_anomaly" + (f",{top}" if top else "") + "\n"


def _top_text(entries: list) -> str:
    """One row's attribution as CSV text: features joined by ";", a window model's metrics as ``metric:share``."""
    return ";".join(f"{e['metric']}:{e['share']:.4f}" if isinstance(e, dict) else str(e) for e in entries)


def write_scores_csv(f: IO[str], scores: np.ndarray, p_values: np.ndarray, is_anomaly: np.ndarray,
                     first_row: int = 0, top: list | None = None, ids: list | None = None) -> None:
    """Write ``[ids...,]row,score,p_value,is_anomaly[,top_features|top_metrics]`` lines (no header) to a text file.

    ``row`` is the 0-based input row (offset by ``first_row``); scores and p-values are written with
    9 significant digits (float32 round-trips exactly); ``is_anomaly`` is 0 or 1; ``top`` (per row,
    :func:`~vae_anomaly.deploy.monitoring.attribution`'s list: feature indices or names, or a window
    model's ``{"metric", "share"}``, most anomalous first) is joined by ";" (``metric:share`` with 4
    decimals); ``ids`` (per ID column, a list of text values or None) come first, quoted by the
    :mod:`csv` module as needed.
    """
    if top is None and ids is None:  # one %-format over the whole chunk: 1.7x faster than a line at a time
        fields: list = [0] * (4 * len(scores))
        fields[0::4] = range(first_row, first_row + len(scores))
        fields[1::4], fields[2::4] = scores.tolist(), p_values.tolist()
        fields[3::4] = np.asarray(is_anomaly, dtype=np.uint8).tolist()
        f.write(("%d,%.9g,%.9g,%d\n" * len(scores)) % tuple(fields))
        return
    lines = [[first_row + i, f"{s:.9g}", f"{p:.9g}", int(a)]
             for i, (s, p, a) in enumerate(zip(scores.tolist(), p_values.tolist(), is_anomaly.tolist()))]
    if top is not None:
        for line, t in zip(lines, top):
            line.append(_top_text(t))
    if ids is not None:
        lines = [[*(("" if v is None else v) for v in vals), *line] for vals, line in zip(zip(*ids), lines)]
    csv.writer(f, lineterminator="\n").writerows(lines)


#: output formats of ``score -o``, by suffix
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".npy": "npy", ".parquet": "parquet"}
_NPY_HEADER_BYTES = 128


def output_format(path: str | os.PathLike | None) -> str:
    """The output format for ``path`` (None = stdout = csv); OutputWriteError for an unknown suffix."""
    if path is None:
        return "csv"
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise OutputWriteError(
            f"{path}: unknown output type {suffix or '(none)'!r}; expected one of {', '.join(OUTPUT_FORMATS)}.")
    return OUTPUT_FORMATS[suffix]


def _npy_vector_header(n: int) -> bytes:
    """A fixed-size (128-byte) .npy v1.0 header for a float32 vector of n values, so it can be rewritten."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % n
    text = text.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


class ScoreWriter:
    """Writes per-row results incrementally to a binary file, in one of :data:`OUTPUT_FORMATS`.

    csv: ``[ID columns...,]row,score,p_value,is_anomaly[,TOP]`` (9 significant digits, so float32
    scores round-trip; the attribution as :func:`write_scores_csv` writes it); jsonl: one object per
    row (a non-finite score is null; ``top_metrics`` as a list of ``{"metric", "share"}``); npy: a
    float32 vector of the scores; parquet: the ID columns (as stored), row, score, p_value,
    is_anomaly [, TOP: a list of names or indices, or of ``{metric, share}`` structs]. Call
    :meth:`close` to finish.

    Parameters
    ----------
    f : the binary file.
    fmt : "csv", "jsonl", "npy" or "parquet".
    top : the attribution column rows come with (``"top_features"`` or ``"top_metrics"``, from
        :func:`~vae_anomaly.deploy.monitoring.attribution`), or None.
    id_schema : the pyarrow schema of the ID columns carried before ``row`` (None = none); CSV and
        JSONL write their values as text.
    named : the features are named (``top_features`` holds names, not indices).
    """

    def __init__(self, f: IO[bytes], fmt: str, top: str | None = None, *, id_schema=None, named: bool = True):
        self.f, self.fmt, self.top, self.n = f, fmt, top, 0
        self.id_schema = id_schema
        id_names = [] if id_schema is None else list(id_schema.names)
        schema.check_output_names(id_names, "the model")
        if fmt == "csv":
            if id_names:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow(id_names)
                f.write((buf.getvalue() + ",").encode())
            f.write(scores_csv_header(top).encode())
        elif fmt == "npy":
            f.write(_npy_vector_header(0))
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            top_type = (pa.list_(pa.struct([("metric", pa.string()), ("share", pa.float64())])) if top == "top_metrics"
                        else pa.list_(pa.string() if named else pa.int32()))
            fields = [*(id_schema or []), ("row", pa.int64()), ("score", pa.float32()), ("p_value", pa.float64()),
                      ("is_anomaly", pa.int8())] + ([(top, top_type)] if top else [])
            self._pa, self._schema = pa, pa.schema(fields)
            self._pq = pq.ParquetWriter(f, self._schema)

    def write(self, scores: np.ndarray, p_values: np.ndarray, is_anomaly: np.ndarray,
              top: list | None = None, ids=None) -> None:
        """Append rows; ``row`` numbers continue from the rows already written. ``top``: per row, the
        attribution list of :func:`~vae_anomaly.deploy.monitoring.attribution`; ``ids``: a pyarrow
        Table of the rows' ID columns."""
        first, n = self.n, len(scores)
        if self.fmt == "csv":
            buf = io.StringIO()
            write_scores_csv(buf, scores, p_values, is_anomaly, first_row=first, top=top,
                             ids=None if ids is None else _text_columns(ids))
            self.f.write(buf.getvalue().encode())
        elif self.fmt == "jsonl":
            tops = top if top is not None else [None] * n
            id_rows = [dict(zip(ids.column_names, v)) for v in zip(*_text_columns(ids))] if ids is not None \
                else [{}] * n
            self.f.write("".join(
                json.dumps({**d, "row": first + i, "score": s if np.isfinite(s) else None, "p_value": p if p == p else None,
                            "is_anomaly": int(a), **({self.top: t} if t is not None else {})}) + "\n"
                for i, (d, s, p, a, t) in enumerate(zip(id_rows, scores.tolist(), p_values.tolist(),
                                                        is_anomaly.tolist(), tops))
            ).encode())
        elif self.fmt == "npy":
            self.f.write(np.ascontiguousarray(scores, dtype="<f4").tobytes())
        else:
            pa = self._pa
            cols = [np.arange(first, first + n, dtype=np.int64), scores.astype(np.float32), p_values,
                    is_anomaly.astype(np.int8)] + ([top] if self.top else [])
            n_ids = 0 if ids is None else ids.num_columns
            arrays = [ids.column(i) for i in range(n_ids)] + \
                [pa.array(c, type=t) for c, t in zip(cols, self._schema.types[n_ids:])]
            self._pq.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self.n += n

    def close(self) -> None:
        """Finish the file (the .npy header gets the final length; the Parquet footer is written)."""
        if self.fmt == "npy":
            self.f.seek(0)
            self.f.write(_npy_vector_header(self.n))
            self.f.seek(0, os.SEEK_END)
        elif self.fmt == "parquet":
            self._pq.close()


def _text_columns(ids) -> list[list]:
    """A pyarrow Table's columns as lists of text (None for a missing value)."""
    pa = tables.load_pyarrow()
    return [(c if pa.types.is_string(c.type) else tables.arrow_compute().cast(c, pa.string())).to_pylist()
            for c in ids.columns]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and ``os.replace`` it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Raises
    ------
    OutputWriteError
        The destination folder is missing or not writable (nothing is written).
    """
    dest = Path(path)
    folder = check_output_folder(dest)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, dest.stat().st_mode & 0o777 if dest.exists() else 0o666 & ~umask)  # mkstemp gives 0600
    except OSError as e:
        raise OutputWriteError(f"{dest}: cannot create a file in {folder} ({e.strerror}).") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputWriteError(f"{dest}: cannot write ({e.strerror or e}).") from None
        raise
