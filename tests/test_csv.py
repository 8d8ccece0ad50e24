"""Tests for core.data.csvfile: digits in the Kaggle digit-recognizer CSV format."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from core.data.csvfile import CSVFormatError, DigitsCSV, read_digits_csv
from tests.helpers import write_digits_csv

PIXEL_NAMES = [f"pixel{i}" for i in range(784)]


def random_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (count, 28, 28) images using the full 0..255 range, and labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[:, :2] = 0  # MNIST-like black margins
    images[0, 5, 5], images[0, 6, 6] = 0, 255
    return images, rng.integers(0, 10, count)


def csv_text(header: list[str], rows: list[list]) -> str:
    return "\n".join(",".join(str(cell) for cell in row) for row in [header, *rows]) + "\n"


def kaggle_text(count: int = 5, with_label: bool = True) -> str:
    """A small valid file, label first."""
    images, labels = random_digits(count)
    rows = images.reshape(count, 784).tolist()
    if with_label:
        rows = [[int(label), *cells] for label, cells in zip(labels, rows)]
        return csv_text(["label", *PIXEL_NAMES], rows)
    return csv_text(PIXEL_NAMES, rows)


def with_cell(text: str, row: int, column: str, value: str) -> str:
    """Replace the cell of data row `row` (1-based) in column `column`."""
    lines = text.split("\n")
    position = lines[0].split(",").index(column)
    cells = lines[row].split(",")
    cells[position] = value
    lines[row] = ",".join(cells)
    return "\n".join(lines)


def with_line(text: str, row: int, change) -> str:
    """Apply `change` to the list of cells of data row `row` (1-based); row 0 is the header."""
    lines = text.split("\n")
    cells = lines[row].split(",")
    change(cells)
    lines[row] = ",".join(cells)
    return "\n".join(lines)


# --------------------------------------------------------------------------- round trips


def test_round_trip_through_a_file(tmp_path):
    images, labels = random_digits(20)
    path = tmp_path / "digits.csv"
    write_digits_csv(path, torch.from_numpy(images), torch.from_numpy(labels))
    assert path.read_text().startswith("label,pixel0,pixel1,")
    digits = read_digits_csv(path)
    assert isinstance(digits, DigitsCSV) and len(digits) == 20 and digits.has_labels
    assert digits.images.dtype == torch.uint8 and digits.images.shape == (20, 28, 28)
    assert digits.labels.dtype == torch.int64
    assert np.array_equal(digits.images.numpy(), images)
    assert np.array_equal(digits.labels.numpy(), labels)


def test_columns_in_any_order_read_the_same():
    images, labels = random_digits(6)
    header = ["label", *PIXEL_NAMES]
    table = np.column_stack([labels, images.reshape(6, 784)])
    order = np.random.default_rng(7).permutation(785)
    shuffled = csv_text([header[i] for i in order], table[:, order].tolist())
    digits = read_digits_csv(shuffled.encode())
    assert np.array_equal(digits.images.numpy(), images)
    assert np.array_equal(digits.labels.numpy(), labels)


def test_row_by_col_naming():
    images, labels = random_digits(3)
    header = [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)]
    order = np.random.default_rng(8).permutation(784)
    table = images.reshape(3, 784)[:, order]
    rows = [[*cells, int(label)] for cells, label in zip(table.tolist(), labels)]
    text = csv_text([*(header[i] for i in order), "label"], rows)
    digits = read_digits_csv(text.encode())
    assert np.array_equal(digits.images.numpy(), images)
    assert np.array_equal(digits.labels.numpy(), labels)


def test_file_without_label_is_for_prediction():
    digits = read_digits_csv(kaggle_text(4, with_label=False).encode())
    assert not digits.has_labels and digits.labels is None and len(digits) == 4


def test_uploaded_buffer_already_read_and_windows_line_ends():
    text = kaggle_text(3).replace("\n", "\r\n")
    uploaded = io.BytesIO(("\ufeff" + text).encode())  # with a byte-order mark, as Excel writes
    uploaded.read()
    assert len(read_digits_csv(uploaded)) == 3


def test_quoted_cells_and_whole_floats_are_read():
    text = with_cell(kaggle_text(3), 2, "pixel100", '"17"')
    text = with_cell(text, 3, "pixel5", "4.0")
    digits = read_digits_csv(text.encode())
    assert digits.images[1].flatten()[100] == 17 and digits.images[2].flatten()[5] == 4


def test_max_rows_reads_only_the_first_rows():
    text = with_cell(kaggle_text(5), 5, "pixel9", "oops")  # beyond max_rows: never read
    digits = read_digits_csv(text.encode(), max_rows=3)
    assert len(digits) == 3
    assert np.array_equal(digits.images.numpy(), random_digits(5)[0][:3])


def test_five_thousand_rows():
    images, labels = random_digits(5000, seed=9)
    buffer = io.BytesIO()
    write_digits_csv(buffer, images, labels)
    digits = read_digits_csv(buffer.getvalue())
    assert len(digits) == 5000 and np.array_equal(digits.images.numpy(), images)


# --------------------------------------------------------------------------- bad files


def drop_column(text: str, name: str) -> str:
    lines = [line.split(",") for line in text.split("\n")]
    position = lines[0].index(name)
    kept = [cells[:position] + cells[position + 1 :] for cells in lines if cells != [""]]
    return "\n".join(",".join(cells) for cells in kept)


VALID = kaggle_text(20)  # label first; data row R is file line R + 1

BAD_FILES = {
    # name: (file text, parts the message must contain)
    "text_cell": (
        with_cell(VALID, 17, "pixel301", "abc"),
        ["row 17 (line 18)", "'pixel301'", "'abc' is not a number"],
    ),
    "fraction": (
        with_cell(VALID, 3, "pixel40", "3.5"),
        ["row 3 (line 4)", "'pixel40'", "'3.5'", "whole number"],
    ),
    "pixel_256": (
        with_cell(VALID, 2, "pixel783", "256"),
        ["row 2 (line 3)", "'pixel783'", "'256'", "0..255"],
    ),
    "pixel_negative": (
        with_cell(VALID, 4, "pixel0", "-1"),
        ["row 4 (line 5)", "'pixel0'", "'-1'", "0..255"],
    ),
    "label_10": (
        with_cell(VALID, 1, "label", "10"),
        ["row 1 (line 2)", "'label'", "'10'", "0..9"],
    ),
    "empty_cell": (with_cell(VALID, 3, "pixel7", ""), ["row 3 (line 4)", "'pixel7'", "empty"]),
    "too_few_cells": (
        with_line(VALID, 3, lambda cells: cells.pop()),
        ["row 3 (line 4)", "784 cells", "expected 785"],
    ),
    "too_many_cells": (
        with_line(VALID, 2, lambda cells: cells.append("0")),
        ["row 2 (line 3)", "786 cells", "expected 785"],
    ),
    "first_row_too_many": (
        with_line(VALID, 1, lambda cells: cells.append("0")),
        ["row 1 (line 2)", "786 cells"],
    ),
    "missing_column": (
        drop_column(VALID, "pixel783"),
        ["784 columns", "784 pixel columns", "'pixel783'", "missing"],
    ),
    "duplicate_column": (with_cell(VALID, 0, "pixel5", "pixel4"), ["'pixel4'", "twice"]),
    "unknown_column": (with_cell(VALID, 0, "pixel5", "colour"), ["'colour'", "unknown"]),
    "pixel_off_grid": (with_cell(VALID, 0, "pixel5", "pixel784"), ["'pixel784'", "unknown"]),
    "no_header": (VALID.split("\n", 1)[1], ["header"]),
    "empty_file": ("", ["empty"]),
    "blank_file": ("\n\n  \n", ["empty"]),
    "header_only": (VALID.split("\n", 1)[0] + "\n", ["no data rows"]),
    "binary": (None, ["not a text CSV"]),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_names_row_and_column(name):
    text, expected = BAD_FILES[name]
    data = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" if text is None else text.encode()
    with pytest.raises(CSVFormatError) as caught:
        read_digits_csv(data)
    for part in expected:
        assert part in str(caught.value), f"{part!r} not in {str(caught.value)!r}"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CSVFormatError, match="nowhere.csv"):
        read_digits_csv(tmp_path / "nowhere.csv")


def test_first_bad_cell_in_row_major_order_is_reported():
    text = with_cell(VALID, 3, "pixel1", "abc")
    text = with_cell(text, 2, "pixel700", "300")  # earlier row, later column
    text = with_cell(text, 2, "pixel600", "1.5")  # earlier still in that row
    assert "row 2 (line 3), column 'pixel600'" in error_of(text)
    # A bad value above a row with too few cells comes first.
    short = with_line(VALID, 4, lambda cells: cells.pop())
    assert "row 2 (line 3), column 'pixel9'" in error_of(with_cell(short, 2, "pixel9", "x"))


def test_line_numbers_count_blank_lines():
    lines = with_cell(VALID, 3, "pixel2", "nan").split("\n")
    text = "\n".join(lines[:2] + ["", ""] + lines[2:])  # two blank lines after row 1
    assert "row 3 (line 6), column 'pixel2': 'nan' is not a number" in error_of(text)


def test_a_number_made_of_number_characters_is_still_caught():
    text = with_cell(VALID, 4, "pixel3", "1.2.3")
    assert "row 4 (line 5), column 'pixel3': '1.2.3' is not a number" in error_of(text)


def error_of(text: str) -> str:
    with pytest.raises(CSVFormatError) as caught:
        read_digits_csv(text.encode())
    return str(caught.value)
