"""Reading input matrices and writing files atomically (numpy only, never pickle).

Readers return the array as stored (any numeric dtype); :func:`vae_anomaly.validation.check_array`
turns it into the float32 C-ordered (n_rows, n_features) matrix the model takes. Every reader
raises :class:`~vae_anomaly.errors.InputValidationError` with a one-line message naming the file.

Every file vae-anomaly writes goes through :func:`atomic_write`: a temporary file in the
destination folder, flushed and fsync-ed, then ``os.replace``-d over the destination, so a reader
sees either the old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from .errors import InputValidationError, OutputWriteError

SUPPORTED_SUFFIXES = (".npy", ".npz", ".csv")
_NUMERIC_KINDS = "biuf"  # bool, signed int, unsigned int, float


def read_matrix(path: str | os.PathLike) -> np.ndarray:
    """Read a numeric matrix from ``.npy``, ``.npz`` or ``.csv``.

    Parameters
    ----------
    path : path to a ``.npy`` file (a numeric array), a ``.npz`` archive (array ``X``, or its only
        array) or a ``.csv`` file (numeric cells, comma-separated, optional header row).

    Returns
    -------
    ndarray of any numeric dtype, as stored (shape not yet checked).

    Raises
    ------
    InputValidationError
        Missing file, unsupported suffix, object/string dtype (never unpickled), a header that
        disagrees with the file size, or a non-numeric CSV cell (row and column named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"{p}: file not found; expected an existing .npy, .npz or .csv file.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _read_npy(p)
    if suffix == ".npz":
        return _read_npz(p)
    if suffix == ".csv":
        return _read_csv(p)
    raise InputValidationError(
        f"{p}: unsupported file type {suffix or '(none)'!r}; expected one of "
        f"{', '.join(SUPPORTED_SUFFIXES)}. Convert the data to one of these formats."
    )


def _check_dtype(label: str, dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in _NUMERIC_KINDS:
        raise InputValidationError(
            f"{label}: array has dtype {dtype}; expected a numeric dtype (bool, int or float). "
            "Object, string, complex, structured and datetime arrays are refused."
        )


def _check_npy_header(f: IO[bytes], size: int, label: str) -> None:
    """Read a .npy header from ``f`` and check dtype and declared size against ``size`` bytes.

    Nothing is allocated from the header: a 200-byte file that declares 10^12 rows is refused here.
    """
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputValidationError(f"{label}: cannot read as UTF-8 text CSV ({e}).") from None
    return _parse_csv(io.StringIO(text, newline=""), label)


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


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(p: Path) -> np.ndarray:
    try:
        with p.open(newline="", encoding="utf-8") as f:
            return _parse_csv(f, str(p))
    except (OSError, UnicodeDecodeError) as e:
        raise InputValidationError(f"{p}: cannot read as UTF-8 text CSV ({e}).") from None


def _parse_csv(lines: Iterable[str], p: str) -> np.ndarray:
    """Parse numeric CSV lines; a first row that is not all numbers is taken as the header."""
    rows = [r for r in csv.reader(lines) if r]  # blank lines carry no data
    if not rows:
        raise InputValidationError(f"{p}: empty file; expected rows of comma-separated numbers.")
    if not all(_is_number(c) for c in rows[0]):
        header, rows = rows[0], rows[1:]
        if not rows:
            return np.empty((0, len(header)), dtype=np.float64)
    width = len(rows[0])
    out = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputValidationError(
                f"{p}: data row {i} has {len(row)} cells; expected {width} like the first row. "
                "Fix the ragged row."
            )
        for j, cell in enumerate(row):
            try:
                out[i, j] = float(cell)
            except ValueError:
                raise InputValidationError(
                    f"{p}: data row {i}, column {j} holds {cell[:40]!r}; expected a number. "
                    "Remove or encode non-numeric columns."
                ) from None
    return out


def check_output_folder(path: str | os.PathLike) -> Path:
    """Return ``path``'s folder, or raise OutputWriteError if it does not exist (exit 5)."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise OutputWriteError(
            f"{dest}: folder {folder} does not exist; expected an existing folder. Create it first."
        )
    return folder


def scores_csv_header(top_features: bool = False) -> str:
    """The header line of the scores CSV."""
    return "row,score,p_value,is_anomaly" + (",top_features" if top_features else "") + "\n"


def write_scores_csv(f: IO[str], scores: np.ndarray, p_values: np.ndarray, is_anomaly: np.ndarray,
                     first_row: int = 0, top_features: np.ndarray | None = None) -> None:
    """Write ``row,score,p_value,is_anomaly[,top_features]`` lines (no header) to a text file.

    ``row`` is the 0-based input row (offset by ``first_row``); scores and p-values are written with
    9 significant digits (float32 round-trips exactly); ``is_anomaly`` is 0 or 1; ``top_features``
    (int, (n_rows, k)) becomes the feature indices joined by ";", most anomalous first.
    """
    rows = zip(scores.tolist(), p_values.tolist(), is_anomaly.tolist())
    if top_features is None:
        f.writelines(f"{first_row + i},{s:.9g},{p:.9g},{int(a)}\n" for i, (s, p, a) in enumerate(rows))
    else:
        f.writelines(f"{first_row + i},{s:.9g},{p:.9g},{int(a)},{';'.join(map(str, t))}\n"
                     for i, ((s, p, a), t) in enumerate(zip(rows, top_features.tolist())))


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
