"""Reading a training CSV: a header row, numeric feature columns and one label column (any strings).

Every problem raises `InputError` with one line naming the file, line and column, e.g.
"CSV data.csv line 7 column 'x3': 'abc' is not a number". Line numbers are those of the file (the header
is line 1), so an editor jumps straight to the cell.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.errors import InputError

# float32 is what the model and the server see; a larger finite value would silently become inf.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_MAX_LISTED_COLUMNS = 10


@dataclass(frozen=True)
class CsvTable:
    features: torch.Tensor  # (N, F) float32, columns in header order minus the label column
    labels: tuple[str, ...]  # (N,) raw label strings, stripped
    feature_names: tuple[str, ...]  # (F,)
    label_column: str


def read_csv(path: Path, label_column: str | None) -> CsvTable:
    """Parse `path`; `label_column` None means the last column of the header."""
    where = f"CSV {path}"
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = _read_header(reader, where)
            label_index = _label_index(header, label_column, where)
            rows, labels = _read_rows(reader, header, label_index, where)
    except FileNotFoundError:
        raise InputError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{where} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise InputError(f"{where} cannot be read: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise InputError(f"{where} is not valid CSV: {exc}") from None
    if not rows:
        raise InputError(f"{where} has a header but no data rows")
    names = tuple(name for index, name in enumerate(header) if index != label_index)
    # (N, F): built from Python floats already checked to be finite and within float32 range.
    features = torch.tensor(rows, dtype=torch.float32)
    return CsvTable(features, tuple(labels), names, header[label_index])


def _read_header(reader: Iterator[list[str]], where: str) -> list[str]:
    header = next(reader, None)
    if header is None:
        raise InputError(f"{where} is empty; expected a header row")
    names = [name.strip() for name in header]
    for index, name in enumerate(names, start=1):
        if not name:
            raise InputError(f"{where} header column {index} has no name")
    # Counted once (linear): names.count per name took 103 s for a 100,000-column header.
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InputError(f"{where} header repeats column names: {', '.join(duplicates)}")
    if len(names) < 2:
        raise InputError(f"{where} needs at least one feature column and a label column, header has {names}")
    return names


def _label_index(header: list[str], label_column: str | None, where: str) -> int:
    if label_column is None:
        return len(header) - 1
    if label_column not in header:
        listed = ", ".join(header[:_MAX_LISTED_COLUMNS]) + (", ..." if len(header) > _MAX_LISTED_COLUMNS else "")
        raise InputError(f"{where} has no label column {label_column!r} (columns: {listed})")
    return header.index(label_column)


# `reader` is a csv.reader (its type has no public name); only iteration and .line_num are used.
def _read_rows(reader: Any, header: list[str], label_index: int, where: str) -> tuple[list[list[float]], list[str]]:
    rows: list[list[float]] = []
    labels: list[str] = []
    for cells in reader:
        if not cells or all(not cell.strip() for cell in cells):
            continue  # blank lines (a trailing newline, spacing) are not rows
        line = reader.line_num
        if len(cells) != len(header):
            raise InputError(f"{where} line {line} has {len(cells)} cells, the header has {len(header)}")
        label = cells[label_index].strip()
        if not label:
            raise InputError(f"{where} line {line} column {header[label_index]!r}: empty label")
        labels.append(label)
        rows.append(
            [
                _number(cell, f"{where} line {line} column {header[index]!r}")
                for index, cell in enumerate(cells)
                if index != label_index
            ]
        )
    return rows, labels


def _number(cell: str, where: str) -> float:
    text = cell.strip()
    if not text:
        raise InputError(f"{where}: empty cell, expected a number")
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {text!r} is not a finite number")
    if abs(value) > FLOAT32_MAX:
        raise InputError(f"{where}: {text!r} does not fit in float32")
    return value
