"""Checking a parsed training CSV cell by cell, vectorized: every unusable cell of the file found and reported
in one line (counts per column, the first lines); text columns told from numeric ones; the numeric columns
gathered into one float32 matrix."""

from __future__ import annotations

import ctypes
import functools
import itertools
from collections.abc import Callable
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
_TILE_ROWS = 4096  # matrix rows written per pass over the columns: 4096 x 50 x 4 bytes stay in cache
_DROPPED = np.empty(0, dtype=np.float32)


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
    frames: list[pd.DataFrame],
    header: list[str],
    label: str,
    features: list[str],
    fmt: CsvFormat,
    categorical: tuple[str, ...],
    missing_allowed: bool,
    newlines: int,
    where: str,
) -> Cells:
    """The usable cells, or InputError listing every unusable one. `frames`: the file's data rows in order,
    one frame or one per block parsed side by side (typed alike); their numeric feature columns are taken out
    of them (the list's frames are replaced). `newlines`: the file's count."""
    label_text = _stripped(_joined(frames, label))
    text_cells = {
        name: _stripped(_joined(frames, name))
        for name in features
        if not pd.api.types.is_numeric_dtype(frames[0][name])
    }
    keep = _kept_rows(frames, label_text, text_cells, features)  # (N,) rows that are not blank lines
    rows = len(label_text)
    # One newline per row plus the header's (the last row may lack one): then row i sits on line i + 2.
    problems = _Problems(where, newlines in {rows, rows + 1})
    if not len(keep):
        raise InputError(f"{where} has a header but no data rows")
    parts = _Parts.of(frames, keep)
    columns = _take_columns(frames, [name for name in features if name not in text_cells])
    numeric: dict[str, list[np.ndarray]] = {}
    text: dict[str, np.ndarray] = {}
    missing_counts: dict[str, int] = {}
    for name in header:
        if name == label:
            problems.add(label, "empty label", keep[label_text.iloc[keep].isna().to_numpy()])
            continue
        if name in text_cells:
            invalid = _text_column(
                name, text_cells[name].iloc[keep], keep, fmt, categorical, problems, parts, numeric, text
            )
        elif name in features:
            invalid = _numeric_column(name, parts.kept(columns.pop(name)), keep, problems, numeric)
        else:
            continue
        missing = (
            np.concatenate([np.isnan(piece) for piece in numeric[name]]) & ~invalid
            if name in numeric
            else np.fromiter((cell is None for cell in text[name]), dtype=bool, count=len(text[name]))
        )
        missing_counts[name] = int(missing.sum())
        if not missing_allowed:
            problems.add(name, "blank", keep[missing])
    problems.raise_if_any()
    labels = tuple(label_text.iloc[keep].tolist())
    names = tuple(name for name in features if name in numeric)
    return Cells(_matrix(numeric, names, parts.lengths), names, text, labels, missing_counts)


def _joined(frames: list[pd.DataFrame], name: str) -> pd.Series:
    """(N,) one column of every frame (text and label columns: the numeric ones are never joined)."""
    return frames[0][name] if len(frames) == 1 else pd.concat([frame[name] for frame in frames], ignore_index=True)


def _take_columns(frames: list[pd.DataFrame], names: list[str]) -> dict[str, list[np.ndarray]]:
    """Each named column as its pieces, (rows of each frame,), taken out of the frames (in place in the
    list), so that a piece's memory goes with the last reference the check holds. (One drop per frame:
    DataFrame.pop per column rebuilt the frame's block list each time, 67 ms for 50 columns in 4 frames.)"""
    taken = {name: [frame[name].to_numpy() for frame in frames] for name in names}
    for index, frame in enumerate(frames):
        frames[index] = frame.drop(columns=names)
    return taken


def _kept_rows(
    frames: list[pd.DataFrame], label_text: pd.Series, text_cells: dict[str, pd.Series], features: list[str]
) -> np.ndarray:
    """(N',) the rows with any cell: a blank line (or ",,,") has none. Only rows without a label can be
    blank, so only those are looked at in the feature columns."""
    unlabelled = np.flatnonzero(label_text.isna().to_numpy())  # (U,) usually none
    if not len(unlabelled):
        return np.arange(len(label_text))
    blank = np.ones(len(unlabelled), dtype=bool)  # (U,)
    for name in features:
        column = text_cells[name] if name in text_cells else _joined(frames, name)
        blank &= column.iloc[unlabelled].isna().to_numpy()
    keep = np.ones(len(label_text), dtype=bool)
    keep[unlabelled[blank]] = False
    return np.flatnonzero(keep)


@dataclass(frozen=True)
class _Parts:
    """The kept rows of each frame: `chosen[i]` indexes frame i's rows (None: all of them)."""

    chosen: list[np.ndarray | None]
    lengths: list[int]  # kept rows per frame

    @classmethod
    def of(cls, frames: list[pd.DataFrame], keep: np.ndarray) -> _Parts:
        sizes = [len(frame) for frame in frames]
        if len(keep) == sum(sizes):  # no blank line: the columns are taken as they are, not copied
            return cls([None] * len(frames), sizes)
        starts = np.cumsum([0, *sizes])  # (F + 1,)
        chosen = [keep[(keep >= start) & (keep < stop)] - start for start, stop in itertools.pairwise(starts)]
        return cls(list(chosen), [len(rows) for rows in chosen])

    def kept(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        return [piece if rows is None else piece[rows] for piece, rows in zip(pieces, self.chosen, strict=True)]

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """(N',) -> views of it, one per frame."""
        return np.split(values, np.cumsum(self.lengths)[:-1])


def _matrix(columns: dict[str, list[np.ndarray]], names: tuple[str, ...], lengths: list[int]) -> np.ndarray:
    """(rows, K) float32 from the K columns' pieces (one per frame), frame by frame in row tiles, each
    frame's pieces dropped once copied: the frames and the matrix are never both whole in memory. (Column by
    column, each pass wrote one float in every 200 bytes of the matrix: 40-76 ms against 18 for tiles.)"""
    matrix = np.empty((sum(lengths), len(names)), dtype=np.float32)
    start = 0
    for part, length in enumerate(lengths):
        pieces = [columns[name][part] for name in names]  # K x (length,)
        for name in names:
            columns[name][part] = _DROPPED
        for first in range(0, length, _TILE_ROWS):
            last = min(first + _TILE_ROWS, length)
            for position, piece in enumerate(pieces):
                matrix[start + first : start + last, position] = piece[first:last]
        del pieces
        _return_freed_memory()
        start += length
    return matrix


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc (musl, macOS): their allocators return memory themselves
        return None


def _return_freed_memory() -> None:
    """Hands the pages of the frames just dropped back to the system. glibc keeps freed memory in its arenas
    (the parser threads' columns sit in theirs), and the matrix (over 32 MiB: mapped afresh) cannot reuse it:
    without this the load added frames + matrix (93 MB on 200,000 x 50) instead of about one of them."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
    name: str, pieces: list[np.ndarray], keep: np.ndarray, problems: _Problems, numeric: dict[str, list[np.ndarray]]
) -> np.ndarray:
    """Checks and stores one column, given in pieces (one per frame); returns the (N,) mask of its invalid
    cells (reported already)."""
    infinite = np.concatenate([np.isinf(piece) for piece in pieces])  # (N,)
    problems.add(name, "not finite", keep[infinite], _cells_at(pieces, infinite))
    too_large = np.concatenate([_beyond_float32(piece) for piece in pieces])  # (N,)
    problems.add(name, "beyond float32's range", keep[too_large], _cells_at(pieces, too_large))
    with np.errstate(over="ignore"):
        numeric[name] = [piece.astype(np.float32, copy=False) for piece in pieces]
    return infinite | too_large


def _beyond_float32(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float32:  # parsed as float32 already: nothing finite is beyond it
        return np.zeros(len(values), dtype=bool)
    return np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)


def _cells_at(pieces: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """(M,) object: the cells where `mask` (over the pieces joined) is set."""
    if not mask.any():
        return np.empty(0, dtype=object)
    masks = np.split(mask, np.cumsum([len(piece) for piece in pieces])[:-1])
    return np.array(
        [cell for piece, chosen in zip(pieces, masks, strict=True) for cell in piece[chosen].tolist()], dtype=object
    )


def _text_column(
    name: str,
    cells: pd.Series,
    keep: np.ndarray,
    fmt: CsvFormat,
    categorical: tuple[str, ...],
    problems: _Problems,
    parts: _Parts,
    numeric: dict[str, list[np.ndarray]],
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
    invalid = _numeric_column(name, parts.split(values), keep, problems, numeric)
    invalid[np.flatnonzero(present)[bad]] = True
    return invalid
