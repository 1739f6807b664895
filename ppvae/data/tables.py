"""A user's matrix of rows from a ``.npy``, ``.csv`` or ``.txt`` file: :func:`read_table`.

* ``.npy``: a 2-D numeric array (``numpy.save``; pickles are refused), or a 1-D structured array
  whose named numeric fields are the columns (their names become the column names).
* ``.csv`` (comma-separated) and ``.txt`` (whitespace-separated): rows of numbers, one per
  line; empty lines and ``#`` comments are skipped. A first row that is not all numbers is a
  header row: its cells are the column names. A cell that is not a number anywhere else, or a
  row with another number of cells, is an error naming the file, the line and the column.

Every failure raises :class:`TableError` (a ``ValueError``) or ``FileNotFoundError`` with a
message that names the file and what is wrong with it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["SUFFIXES", "Table", "TableError", "read_table"]

SUFFIXES = (".npy", ".csv", ".txt")


class TableError(ValueError):
    """A data file that is not a matrix of finite real numbers; the message names the file."""


class Table(NamedTuple):
    """The rows of a data file: values ``[N, D]`` (float64) and the column names, if any."""

    values: np.ndarray
    columns: tuple[str, ...] | None  # from a header row or named .npy fields; None: unnamed


def _cells(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _data_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines that hold data: not empty, not a ``#`` comment."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0]
        if body.strip():
            out.append((i, body))
    return out


def _first_problem(p: Path, lines: list[tuple[int, str]], delimiter: str | None,
                   columns: tuple[str, ...] | None) -> str:
    """Where a text matrix stops being one: a ragged row or a cell that is not a number."""
    width = None
    for number, line in lines:
        cells = _cells(line, delimiter)
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            return (f"{p}, line {number}: {len(cells)} value{'s' * (len(cells) != 1)} where "
                    f"the rows above have {width}")
        for j, cell in enumerate(cells, 1):
            if not _number(cell):
                name = f" ({columns[j - 1]!r})" if columns and j <= len(columns) else ""
                what = f"'{cell}'" if cell else "an empty cell"
                return (f"{p}, line {number}, column {j}{name}: {what} is not a number (only "
                        "the first row may be a header of column names)")
    return f"{p}: could not read a numeric matrix"


def _read_text(p: Path) -> Table:
    delimiter = "," if p.suffix == ".csv" else None
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's CSV) is dropped
    except UnicodeDecodeError as e:
        raise TableError(f"{p}: not a text file of numbers (not UTF-8: {e.reason} at byte "
                         f"{e.start})") from e
    lines = _data_lines(text)
    if not lines:
        raise TableError(f"{p}: the file holds no rows of numbers (input contained no data)")
    columns = None
    first = _cells(lines[0][1], delimiter)
    if not all(_number(c) for c in first):
        columns = tuple(c.strip().strip('"').strip("'") for c in first)
        lines = lines[1:]
        if not lines:
            raise TableError(f"{p}: a header row ({', '.join(columns)}) and no rows of numbers "
                             "below it")
    try:  # numpy's C parser; on failure, the slow scan finds the line and column
        arr = np.loadtxt([line for _, line in lines], delimiter=delimiter, ndmin=2,
                         dtype=np.float64, comments=None)
    except ValueError:
        raise TableError(_first_problem(p, lines, delimiter, columns)) from None
    if columns is not None and len(columns) != arr.shape[1]:
        raise TableError(f"{p}: the header row names {len(columns)} columns but the rows have "
                         f"{arr.shape[1]} values")
    return Table(arr, columns)


def _read_npy(p: Path) -> Table:
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, ... for bad files
        raise TableError(f"{p}: could not read a numeric matrix ({e})") from e
    if not isinstance(arr, np.ndarray):
        raise TableError(f"{p}: expected one array, got {type(arr).__name__}")
    if arr.dtype.names:  # a structured array: its numeric fields are the columns
        bad = [n for n in arr.dtype.names if arr.dtype[n].kind not in "biuf"
               or arr.dtype[n].shape]
        if bad or arr.ndim != 1:
            raise TableError(f"{p}: a structured array needs one dimension and scalar numeric "
                             f"fields; fields {bad or list(arr.dtype.names)} are not")
        return Table(np.stack([arr[n] for n in arr.dtype.names], axis=1), arr.dtype.names)
    return Table(arr, None)


def read_table(path: str | os.PathLike, *, min_rows: int = 1) -> Table:
    """The matrix ``[N, D]`` (float64, finite, N >= ``min_rows``, D >= 1) in a data file.

    Args:
        path: a ``.npy``, ``.csv`` or ``.txt`` file (module docstring).
        min_rows: the fewest rows accepted.

    Returns:
        The values and the column names (a header row, or a structured ``.npy``'s fields).

    Raises:
        FileNotFoundError: no file at ``path``.
        TableError: anything else: not a file, another suffix, strings, complex numbers, another
            shape, too few rows, non-finite values; the message names the file (and, for text
            files, the line and column).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {p}")
    if not p.is_file():
        raise TableError(f"data file {p} is not a file")
    if p.suffix not in SUFFIXES:
        raise TableError(f"{p}: unsupported data file type '{p.suffix}' (use .npy, .csv or "
                         ".txt)")
    table = _read_npy(p) if p.suffix == ".npy" else _read_text(p)
    arr = table.values
    if arr.dtype.kind == "c":
        raise TableError(f"{p}: the data are complex numbers ({arr.dtype}); ppvae models real "
                         "values")
    if arr.dtype.kind not in "biuf":
        raise TableError(f"{p}: the data are not numbers (dtype {arr.dtype})")
    if arr.ndim != 2 or arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise TableError(f"{p}: expected a 2-D array [N, D] with N >= {min_rows} rows and "
                         f"D >= 1 columns, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise TableError(f"{p}: the data contain non-finite values (first at row {row + 1}, "
                         f"column {col + 1}: {arr[row, col]})")
    return Table(arr.astype(np.float64), table.columns)
