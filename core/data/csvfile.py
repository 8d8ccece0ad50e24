"""Digits as CSV in the Kaggle digit-recognizer format (train.csv / test.csv).

A header row, an optional `label` column (0..9) and 784 pixel columns `pixel0`..`pixel783`
(index = row * 28 + col, values 0..255) in any order. The other common MNIST-CSV naming,
`1x1`..`28x28` (row x col, 1-based), is read too. A file without `label` is for
prediction only.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Iterator, TextIO, Union

import numpy as np
import pandas as pd
import torch

from core.data.images import DIGIT_SIZE
from core.errors import BadInput
from core.fsio import GivenFileError, read_given

PIXELS = DIGIT_SIZE * DIGIT_SIZE  # 784 pixel columns
LABEL = "label"
PIXEL_MAX = 255
LABEL_MAX = 9

CSVSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, TextIO]
CSVDest = Union[str, os.PathLike, BinaryIO, TextIO]

_KAGGLE_NAME = re.compile(r"pixel(\d+)")
_ROW_COL_NAME = re.compile(r"(\d+)x(\d+)")
# What pandas' C parser reads as a number; anything else is reported as "not a number".
_NUMBER_TEXT = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(_NUMBER_TEXT)
# A whole unquoted row of numbers; empty cells pass here and are reported later, in order.
# Atomic groups keep a failing 785-cell row from backtracking through earlier cells.
_NUMBER_CELL = rf"(?>[ \t]*(?:{_NUMBER_TEXT})?[ \t]*)"
_NUMBER_ROW = re.compile(rf"{_NUMBER_CELL}(?:,{_NUMBER_CELL})*")
_FOREIGN_CHARACTER = re.compile(r'[^0-9,.eE+\-" \t\n]')
_EXPECTED_COLUMNS = (
    f"{PIXELS} pixel columns (pixel0..pixel{PIXELS - 1}) plus an optional '{LABEL}' column"
)
MAX_CSV_BYTES = 200 * 2**20  # 200 MB, ~70,000 rows; reading takes about 11x the file in memory
_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}  # named when a file uses one instead of commas


class CSVFormatError(BadInput, ValueError):
    """A CSV file that is not in the digits format; the message names the row and column."""


@dataclass(frozen=True)
class DigitsCSV:
    """Digits read from a CSV file."""

    images: torch.Tensor  # uint8 (N, 28, 28), 0..255, white digit on black
    labels: torch.Tensor | None = None  # int64 (N,), 0..9; None for a prediction-only file

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class _Layout:
    """Where each kind of column sits in the file."""

    names: list[str]  # header cells as written (stripped), for messages
    label_column: int | None  # position of `label`, if present
    pixel_columns: np.ndarray  # positions of the pixel columns in the file
    pixel_indices: np.ndarray  # pixel index (row * 28 + col) of each of those
    highest: np.ndarray  # largest allowed value per file column (255 or 9)


# --------------------------------------------------------------------------- reading


def read_digits_csv(source: CSVSource, *, max_rows: int | None = None) -> DigitsCSV:
    """Read digits from a path, bytes or file-like object; only the first max_rows if given.

    Raises CSVFormatError naming the first bad row and column (row-major order).
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    text = _read_text(source)
    header, row_lines, cell_counts = _index_rows(text, max_rows)
    layout = _column_layout(header)
    if len(row_lines) == 0:
        raise CSVFormatError("The file has a header but no data rows.")

    # Parse only the rows before the first one known to be malformed (wrong number of
    # cells, or a cell that is not a number): a bad value above it still comes first.
    data = text.encode("utf-8")  # pandas parses bytes about twice as fast as str
    wrong_counts = np.flatnonzero(cell_counts != len(header))
    stop_row = int(wrong_counts[0]) if wrong_counts.size else len(row_lines)
    columns = _parse_numbers(data, len(header), stop_row)
    if columns is None:
        columns, stop_row = _parse_until_non_numeric(text, data, row_lines, len(header), stop_row)
    bad_row = _first_bad_row(columns, layout.highest)
    if bad_row is None and stop_row < len(row_lines):
        bad_row = stop_row
    if bad_row is not None:
        raise _row_error(text, bad_row, int(row_lines[bad_row]), layout)
    return _to_digits(columns, layout)


def _read_text(source: CSVSource) -> str:
    """Return the whole file as text with '\\n' line ends."""
    if isinstance(source, (str, os.PathLike)):
        try:
            data: bytes | str = read_given(source, "a CSV file", MAX_CSV_BYTES, _too_large)
        except GivenFileError as exc:
            raise CSVFormatError(str(exc)) from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "getvalue"):
        data = source.getvalue()  # the whole buffer even if already read (Streamlit reruns)
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise TypeError(f"cannot read CSV from {type(source).__name__}")
    _check_size(len(data))
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as error:
            message = "The file is not a text CSV file (it is not UTF-8 text)."
            raise CSVFormatError(message) from error
    text = data.removeprefix("\ufeff")
    if "\x00" in text:
        raise CSVFormatError("The file is not a text CSV file (it contains binary data).")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise CSVFormatError(f"The file is empty: it needs a header row naming {_EXPECTED_COLUMNS}.")
    return text


def _check_size(size: int) -> None:
    if size > MAX_CSV_BYTES:
        raise CSVFormatError(_too_large(size))


def _too_large(size: int) -> str:
    return f"The file is larger than {MAX_CSV_BYTES // 2**20} MB ({size / 2**20:,.0f} MB): split it into smaller files."


def _index_rows(text: str, max_rows: int | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return (header cells, file line number of each data row, cell count of each)."""
    rows = _iter_rows(text)
    _, header = next(rows)
    numbered = [
        (line, row.count(",") + 1 if isinstance(row, str) else len(row))  # count: C speed
        for line, row in islice(rows, max_rows)
    ]
    row_lines = np.array([line for line, _ in numbered], dtype=np.int64)
    cell_counts = np.array([count for _, count in numbered], dtype=np.int64)
    return [name.strip() for name in header], row_lines, cell_counts


def _iter_rows(text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, row) for each non-blank row, header first, as pandas sees them.

    A row is the raw line for unquoted files (fast) and the cells otherwise; the header
    always comes as cells.
    """
    if '"' in text:
        yield from _iter_records(text)
        return
    numbered = enumerate(text.split("\n"), start=1)
    lines = ((number, line) for number, line in numbered if line.strip())
    header_line, header = next(lines)
    yield header_line, next(csv.reader([header]))
    yield from lines


def _iter_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, cells) for each non-blank record, the header first."""
    reader = csv.reader(io.StringIO(text))
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line: pandas skips it too
            yield reader.line_num, cells
    except csv.Error as error:
        raise CSVFormatError(f"line {reader.line_num} is not valid CSV: {error}.") from error


def _column_layout(header: list[str]) -> _Layout:
    """Match the header's columns by name; raise CSVFormatError naming what is wrong."""
    if len(header) == 1:
        for separator, shown in _SEPARATORS.items():
            if separator in header[0]:
                raise CSVFormatError(f"The columns are separated by {shown}, not commas: "
                                     "save the file with commas between the cells.")
    if all(_NUMBER.fullmatch(name) for name in header):
        raise CSVFormatError(
            f"The first line holds numbers, not column names: the file needs a header row "
            f"naming {_EXPECTED_COLUMNS}."
        )
    label_column = None
    pixel_of_column: dict[int, int] = {}
    column_of_pixel: dict[int, int] = {}
    unknown = []
    for column, name in enumerate(header):
        if name.lower() == LABEL:
            if label_column is not None:
                raise _header_error(header, f"column '{name}' appears twice")
            label_column = column
            continue
        pixel = _pixel_index(name)
        if pixel is None:
            unknown.append(name)
        elif pixel in column_of_pixel:
            first = header[column_of_pixel[pixel]]
            if first == name:
                raise _header_error(header, f"column '{name}' appears twice")
            raise _header_error(header, f"columns '{first}' and '{name}' name the same pixel")
        else:
            pixel_of_column[column] = pixel
            column_of_pixel[pixel] = column
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise _header_error(header, f"unknown column{plural} {_few(unknown)}")
    missing = [pixel for pixel in range(PIXELS) if pixel not in column_of_pixel]
    if missing:
        style = header[next(iter(pixel_of_column), 0)]  # name missing columns the same way
        names = [_pixel_name(pixel, like=style) for pixel in missing]
        raise _header_error(header, f"{len(missing)} missing, {_few(names)}")

    columns = np.array(sorted(pixel_of_column), dtype=np.int64)
    highest = np.full(len(header), PIXEL_MAX, dtype=np.float64)
    if label_column is not None:
        highest[label_column] = LABEL_MAX
    return _Layout(
        names=header,
        label_column=label_column,
        pixel_columns=columns,
        pixel_indices=np.array([pixel_of_column[c] for c in columns], dtype=np.int64),
        highest=highest,
    )


def _header_error(header: list[str], detail: str) -> CSVFormatError:
    return CSVFormatError(
        f"The header has {len(header)} columns ({detail}); it needs {_EXPECTED_COLUMNS}."
    )


def _pixel_index(name: str) -> int | None:
    """Pixel index named by `pixelN` (0-based) or `RxC` (1-based row x col); else None."""
    kaggle = _KAGGLE_NAME.fullmatch(name.lower())
    if kaggle:
        index = int(kaggle.group(1))
        return index if index < PIXELS else None
    row_col = _ROW_COL_NAME.fullmatch(name.lower())
    if row_col:
        row, col = int(row_col.group(1)), int(row_col.group(2))
        return (row - 1) * DIGIT_SIZE + (col - 1) if 1 <= row <= DIGIT_SIZE and 1 <= col <= DIGIT_SIZE else None
    return None


def _pixel_name(pixel: int, like: str) -> str:
    """The name of a pixel column in the same naming style as `like`."""
    if _ROW_COL_NAME.fullmatch(like.lower()):
        return f"{pixel // DIGIT_SIZE + 1}x{pixel % DIGIT_SIZE + 1}"
    return f"pixel{pixel}"


def _few(names: list[str], shown: int = 5) -> str:
    """Quote the first few names for a message."""
    quoted = ", ".join(f"'{name}'" for name in names[:shown])
    return quoted + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _parse_numbers(data: bytes, n_columns: int, n_rows: int) -> list[np.ndarray] | None:
    """Return the first n_rows as one int64 or float64 array per column; None if some cell
    is not a number. Empty cells become NaN."""
    if n_rows == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(n_columns)]
    options = dict(
        header=0, names=list(range(n_columns)), index_col=False, nrows=n_rows, engine="c"
    )
    # Integers parse fastest; fractions and empty cells need floats (then fail the checks).
    for dtype in (np.int64, np.float64):
        try:
            with warnings.catch_warnings():
                # A cell too large for int64 (1e308) makes numpy warn in pandas' cast before pandas
                # refuses the int pass (ValueError); the float pass reads it and the range check
                # names its row and column: the one line the user reads, without numpy's warning.
                warnings.simplefilter("ignore", RuntimeWarning)
                frame = pd.read_csv(io.BytesIO(data), dtype=dtype, **options)
            # Column by column: no (rows x 785) float matrix, a copy that costs ~1 s and 260 MB.
            return [frame[column].to_numpy() for column in frame.columns]
        except pd.errors.ParserError as error:
            raise CSVFormatError(f"The file is not valid CSV: {error}") from error
        except (ValueError, OverflowError):
            continue
    return None


def _parse_until_non_numeric(
    text: str, data: bytes, row_lines: np.ndarray, n_columns: int, n_rows: int
) -> tuple[list[np.ndarray], int]:
    """Parse the rows above the first one with a cell that is not a number.

    Returns (their values, that row's index).
    """
    # Quick: a character no number has (a letter, say) marks a row that is surely bad.
    stop_row = _first_row_with_foreign_character(text, row_lines, n_rows)
    values = _parse_numbers(data, n_columns, stop_row)
    if values is None:
        # Rare: a malformed number made only of number characters ("1.2.3") lies above.
        stop_row = _first_non_numeric_row(text, stop_row)
        values = _parse_numbers(data, n_columns, stop_row)
    if values is None:
        raise CSVFormatError("The file's numbers could not be read.")
    return values, stop_row


def _first_row_with_foreign_character(text: str, row_lines: np.ndarray, n_rows: int) -> int:
    """Index of the first data row holding a character that cannot be part of a number."""
    header_end = text.find("\n", len(text) - len(text.lstrip()))
    found = _FOREIGN_CHARACTER.search(text, max(header_end, 0))
    if header_end < 0 or found is None:
        return n_rows
    line = text.count("\n", 0, found.start()) + 1
    return min(int(np.searchsorted(row_lines, line)), n_rows)


def _first_non_numeric_row(text: str, n_rows: int) -> int:
    """Index of the first data row, among the first n_rows, with a cell that is not a number."""
    rows = _iter_rows(text)
    next(rows)  # header
    for index, (_, row) in enumerate(islice(rows, n_rows)):
        if isinstance(row, str):
            numeric = _NUMBER_ROW.fullmatch(row) is not None
        else:
            numeric = all(_NUMBER.fullmatch(cell.strip()) or not cell.strip() for cell in row)
        if not numeric:
            return index
    raise CSVFormatError("The file's numbers could not be read.")


def _first_bad_row(columns: list[np.ndarray], highest: np.ndarray) -> int | None:
    """Index of the first row with a cell that is empty, fractional or out of range."""
    row_is_bad = np.zeros(len(columns[0]), dtype=bool)
    for column, column_highest in zip(columns, highest):
        row_is_bad |= (column < 0) | (column > column_highest)
        if column.dtype.kind == "f":
            row_is_bad |= np.floor(column) != column  # also true for NaN (empty cells)
    bad_rows = np.flatnonzero(row_is_bad)
    return int(bad_rows[0]) if bad_rows.size else None


def _row_error(text: str, row: int, line: int, layout: _Layout) -> CSVFormatError:
    """Describe what is wrong with data row `row` (0-based), re-read from the text."""
    rows = _iter_rows(text)
    next(rows)  # header
    _, cells = next(islice(rows, row, None))
    if isinstance(cells, str):
        cells = next(csv.reader([cells]))
    where = f"row {row + 1} (line {line})"
    if len(cells) != len(layout.names):
        return CSVFormatError(
            f"{where} has {len(cells)} cells, expected {len(layout.names)} (one per header column)."
        )
    for column, cell in enumerate(cells):
        problem = _cell_problem(cell, int(layout.highest[column]), column == layout.label_column)
        if problem:
            return CSVFormatError(f"{where}, column '{layout.names[column]}': {problem}.")
    return CSVFormatError(f"{where} could not be read as numbers.")


def _cell_problem(cell: str, highest: int, is_label: bool) -> str | None:
    """What is wrong with one cell, or None."""
    stripped = cell.strip()
    shown = repr(stripped if len(stripped) <= 20 else stripped[:20] + "...")
    if not stripped:
        return "the cell is empty"
    if not _NUMBER.fullmatch(stripped):
        return f"{shown} is not a number"
    value = float(stripped)
    if not 0 <= value <= highest:
        kind = "digit label" if is_label else "pixel value"
        return f"{shown} is not a {kind} 0..{highest}"
    if not value.is_integer():
        return f"{shown} is not a whole number"
    return None


def _to_digits(columns: list[np.ndarray], layout: _Layout) -> DigitsCSV:
    """Assemble validated columns into images ordered by pixel index, plus labels."""
    pixels = np.empty((len(columns[0]), PIXELS), dtype=np.uint8)
    for position, pixel in zip(layout.pixel_columns, layout.pixel_indices):
        pixels[:, pixel] = columns[position]  # validated: whole numbers in 0..255
    labels = None
    if layout.label_column is not None:
        labels = torch.from_numpy(columns[layout.label_column].astype(np.int64))
    return DigitsCSV(images=torch.from_numpy(pixels.reshape(-1, DIGIT_SIZE, DIGIT_SIZE)), labels=labels)
