"""Checking a parsed training CSV cell by cell, vectorized: every unusable cell of the file found and reported
in one line (counts per column, the first lines); text columns told from numeric ones; the numeric columns
gathered into one float32 matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.preprocess import FLOAT32_MAX, NA_SPELLINGS
from training.csv_sniff import CsvFormat
from training.errors import InputError

_NA = frozenset(NA_SPELLINGS)

_MAX_SHOWN = 3  # lines shown per problem
_MAX_LISTED_PROBLEMS = 8  # (column, kind) pairs spelled out; the rest are summed


@dataclass(frozen=True)
class Cells:
    numeric: np.ndarray  # (N, K) float32, NaN where missing
    numeric_names: tuple[str, ...]
    text: dict[str, np.ndarray]  # (N,) object, None where missing
    labels: tuple[str, ...]
    missing_counts: dict[str, int]


@dataclass
class _Problems:
    """Every unusable cell, per column and kind, with the first few places."""

    where: str
    lines_exact: bool
    found: list[tuple[str, str, int, list[str]]] = field(default_factory=list)  # (column, what, count, shown)

    def place(self, row: int) -> str:
        return f"line {row + 2}" if self.lines_exact else f"data row {row + 1}"

    def add(self, column: str, what: str, rows: np.ndarray, values: np.ndarray | None = None) -> None:
        if not len(rows):
            return
        first = rows[:_MAX_SHOWN]
        shown = [
            self.place(int(row)) + ("" if values is None else f" {_clip(values[index])}")
            for index, row in enumerate(first)
        ]
        self.found.append((column, what, len(rows), shown))

    def raise_if_any(self) -> None:
        if not self.found:
            return
        total = sum(count for _, _, count, _ in self.found)
        parts = [
            f"column {column!r}: {count} {what} ({', '.join(shown)}{', ...' if count > len(shown) else ''})"
            for column, what, count, shown in self.found[:_MAX_LISTED_PROBLEMS]
        ]
        rest = self.found[_MAX_LISTED_PROBLEMS:]
        if rest:
            columns = len({column for column, _, _, _ in rest})
            parts.append(f"and {sum(count for _, _, count, _ in rest)} more in {columns} more columns")
        hints = []
        if any(what == "blank" for _, what, _, _ in self.found):
            hints.append("--missing mean, median or constant fills blank feature cells")
        if any(what in {"not a number", "not numbers"} for _, what, _, _ in self.found):
            hints.append("--categorical NAME reads a column as text categories")
        hint = f" ({'; '.join(hints)})" if hints else ""
        cells = "cell cannot" if total == 1 else "cells cannot"
        raise InputError(f"{self.where}: {total} {cells} be used: {'; '.join(parts)}{hint}")


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_cells(
    frame: pd.DataFrame,
    header: list[str],
    label: str,
    features: list[str],
    fmt: CsvFormat,
    categorical: tuple[str, ...],
    missing_allowed: bool,
    newlines: int,
    where: str,
) -> Cells:
    """The frame's usable cells, or InputError listing every unusable one. `newlines`: the file's count."""
    label_text = _stripped(frame[label])
    text_cells = {name: _stripped(frame[name]) for name in features if not pd.api.types.is_numeric_dtype(frame[name])}
    blank = label_text.isna().to_numpy().copy()  # (N,) rows with no cell at all: blank lines, ",,,"
    for name in features:
        blank &= (text_cells[name] if name in text_cells else frame[name]).isna().to_numpy()
    # One newline per row plus the header's (the last row may lack one): then row i sits on line i + 2.
    problems = _Problems(where, newlines in {len(frame), len(frame) + 1})
    keep = np.flatnonzero(~blank)  # (N,) rows that are not blank lines
    every_row = len(keep) == len(frame)  # no blank line: columns are taken as they are, not copied
    if not len(keep):
        raise InputError(f"{where} has a header but no data rows")
    numeric: dict[str, np.ndarray] = {}
    text: dict[str, np.ndarray] = {}
    missing_counts: dict[str, int] = {}
    for name in header:
        if name == label:
            problems.add(label, "empty label", keep[label_text.iloc[keep].isna().to_numpy()])
            continue
        if name in text_cells:
            invalid = _text_column(name, text_cells[name].iloc[keep], keep, fmt, categorical, problems, numeric, text)
        elif name in features:
            values = frame.pop(name).to_numpy()  # (N,)
            invalid = _numeric_column(name, values if every_row else values[keep], keep, problems, numeric)
        else:
            continue
        missing = (
            np.isnan(numeric[name]) & ~invalid
            if name in numeric
            else np.fromiter((cell is None for cell in text[name]), dtype=bool, count=len(text[name]))
        )
        missing_counts[name] = int(missing.sum())
        if not missing_allowed:
            problems.add(name, "blank", keep[missing])
    problems.raise_if_any()
    labels = tuple(label_text.iloc[keep].tolist())
    names = tuple(name for name in features if name in numeric)
    return Cells(_matrix(numeric, names, len(keep)), names, text, labels, missing_counts)


def _matrix(columns: dict[str, np.ndarray], names: tuple[str, ...], rows: int) -> np.ndarray:
    """(rows, K) float32 from the K columns, each dropped once copied: where the columns are copies (rows
    were dropped), they and the matrix are never both whole in memory. (Copying in row tiles was 17 ms
    faster on 200,000 x 50 but keeps every column until the last tile: not worth the memory.)"""
    matrix = np.empty((rows, len(names)), dtype=np.float32)
    for position, name in enumerate(names):
        matrix[:, position] = columns.pop(name)
    return matrix


def _stripped(column: pd.Series) -> pd.Series:
    """Text cells stripped, with blank and NA-spelled ones as missing (NaN)."""
    if pd.api.types.is_numeric_dtype(column):
        return column
    # Stripped once per distinct value, not per cell: a 200,000-row label column has a handful of values
    # (cell by cell, .map took 0.15 s of a 0.8 s load).
    codes, uniques = pd.factorize(column.astype(object), use_na_sentinel=True)  # (N,) -1 where missing
    cleaned = [str(cell).strip() for cell in uniques]
    distinct = np.array([np.nan if cell in _NA else cell for cell in cleaned] + [np.nan], dtype=object)
    return pd.Series(distinct[codes], index=column.index, dtype=object)  # code -1 picks the trailing NaN


def _as_text(cells: pd.Series) -> np.ndarray:
    """(N,) object array: the stripped strings, None where missing."""
    return np.array([None if pd.isna(cell) else cell for cell in cells.astype(object)], dtype=object)


def _numeric_column(
    name: str, values: np.ndarray, keep: np.ndarray, problems: _Problems, numeric: dict[str, np.ndarray]
) -> np.ndarray:
    """Checks and stores one column; returns the (N,) mask of its invalid cells (reported already)."""
    infinite = np.isinf(values)  # (N,)
    problems.add(name, "not finite", keep[infinite], np.array(values[infinite].tolist(), dtype=object))
    too_large = np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)
    problems.add(name, "beyond float32's range", keep[too_large], np.array(values[too_large].tolist(), dtype=object))
    with np.errstate(over="ignore"):
        numeric[name] = values.astype(np.float32, copy=False)
    return infinite | too_large


def _text_column(
    name: str,
    cells: pd.Series,
    keep: np.ndarray,
    fmt: CsvFormat,
    categorical: tuple[str, ...],
    problems: _Problems,
    numeric: dict[str, np.ndarray],
    text: dict[str, np.ndarray],
) -> np.ndarray:
    """A column pandas could not read as numbers: text categories when declared so or when no cell is a
    number; otherwise a numeric column with bad cells (each reported)."""
    present = cells.notna().to_numpy()
    none_invalid = np.zeros(len(cells), dtype=bool)
    if name in categorical:
        text[name] = _as_text(cells)
        return none_invalid
    spelled = cells[present].astype(str)
    if fmt.thousands:
        spelled = spelled.str.replace(fmt.thousands, "", regex=False)
    if fmt.decimal != ".":
        spelled = spelled.str.replace(fmt.decimal, ".", regex=False)
    parsed = pd.to_numeric(spelled, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(parsed).any():
        text[name] = _as_text(cells)
        return none_invalid
    bad = np.isnan(parsed)
    raw = cells[present].to_numpy(dtype=object)
    problems.add(name, "not a number" if bad.sum() == 1 else "not numbers", keep[present][bad], raw[bad])
    values = np.full(len(cells), np.nan)
    values[present] = np.where(bad, np.nan, parsed)
    invalid = _numeric_column(name, values, keep, problems, numeric)
    invalid[np.flatnonzero(present)[bad]] = True
    return invalid
