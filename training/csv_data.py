"""Reading a training CSV: a header row, feature columns (numbers or text) and one label column.

Parsed by pandas' C engine (quoting, CRLF, NA spellings, thousands separators, any one-character delimiter;
about 18x faster than the csv module cell by cell and with a fraction of its memory, see
bench/csv_load.py). The file must be a regular file no larger than the size bound; it is read once, through
a stream that hashes exactly the bytes the parser consumed (the manifest's sha256), so a FIFO, a device or a
file replaced while it is read cannot make the hash describe other data.

Delimiter and decimal mark are sniffed from the first lines (`.tsv` means tab) unless given. Every bad cell
of the whole file is reported in one line (counts per column, the first lines), e.g. "CSV d.csv: 3 cells
cannot be used: column 'b': 2 not numbers (line 3 'zz', line 9 'q'); column 'a': 1 blank (line 5)". Line
numbers are the file's (the header is line 1) when every row is one line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock files

from models.preprocess import FLOAT32_MAX, NA_SPELLINGS
from training.errors import InputError

DEFAULT_MAX_BYTES = 4 << 30  # --max-data-mb default: 4 GiB
HEAD_BYTES = 64 << 10  # sniffing looks at the first 64 KiB (more when the header line is longer)
PROGRESS_BYTES = 32 << 20  # files from 32 MiB get a progress line while they load
DELIMITERS = (",", ";", "\t", "|")
_MAX_LISTED_COLUMNS = 10
_MAX_SHOWN = 3  # lines shown per problem
_MAX_LISTED_PROBLEMS = 8  # (column, kind) pairs spelled out; the rest are summed


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str | None = None  # None: sniffed
    decimal: str | None = None  # None: sniffed
    thousands: str | None = None  # None: sniffed; "" none
    drop_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    missing_allowed: bool = False  # False: a blank feature cell is an error (--missing refuse)
    max_bytes: int = DEFAULT_MAX_BYTES
    progress: bool = False
    progress_bytes: int = PROGRESS_BYTES  # files from this size get the progress line


@dataclass(frozen=True)
class CsvTable:
    numeric: np.ndarray  # (N, K) float32, the numeric feature columns; NaN where a cell was missing
    numeric_names: tuple[str, ...]  # (K,) in header order
    text: dict[str, np.ndarray]  # categorical column -> (N,) object: stripped str, or None where missing
    feature_names: tuple[str, ...]  # every feature column in header order (without label and dropped ones)
    labels: tuple[str, ...]  # (N,) stripped
    label_column: str
    sha256: str  # of the bytes read
    size: int
    delimiter: str
    decimal: str
    thousands: str
    missing_counts: dict[str, int] = field(default_factory=dict)  # feature -> missing cells


class _HashingReader(io.RawIOBase):
    """The file's bytes, once: `head` first (already read for sniffing), then the rest; sha256 and size of
    everything handed out; refuses to go past `limit` bytes (a file that grows while it is read)."""

    def __init__(self, fd: int, head: bytes, limit: int, where: str, bar: tqdm) -> None:
        self.fd, self.pending, self.limit, self.where, self.bar = fd, head, limit, where, bar
        self.digest = hashlib.sha256(head)
        self.size, self.newlines = len(head), head.count(b"\n")
        bar.update(len(head))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.pending:
            count = min(len(view), len(self.pending))
            view[:count] = self.pending[:count]
            self.pending = self.pending[count:]
            return count
        chunk = os.read(self.fd, min(len(view), 1 << 20))
        self.size += len(chunk)
        if self.size > self.limit:
            raise InputError(f"{self.where} grew past the size bound of {self.limit >> 20} MiB while it was read")
        self.digest.update(chunk)
        self.newlines += chunk.count(b"\n")
        self.bar.update(len(chunk))
        view[: len(chunk)] = chunk
        return len(chunk)


def read_csv(path: Path, label_column: str | None, options: CsvOptions | None = None) -> CsvTable:
    """Parse `path`; `label_column` None means the last column of the header."""
    options = options or CsvOptions()
    where = f"CSV {path}"
    fd = _open_regular(path, options.max_bytes, where)
    try:
        size = os.fstat(fd).st_size
        head = _read_head(fd, options.max_bytes, where)
        text = _decode_head(head, where)
        fmt = _sniff(text, path, options, where)
        header = _header(text, fmt.delimiter, where)
        label = _label_name(header, label_column, where)
        features = _kept_features(header, label, options, where)
        hinted = _numeric_in_head(text, header, label, features, fmt, options)
        try:
            frame, reader = _parse_all(fd, head, path, size, _Columns(header, label, features), fmt, options, hinted)
        except _NotAllNumbers:
            # A column the first lines showed as numbers holds something else further down: parse again
            # without the float32 hints, so every bad cell can be reported (a regular file can be re-read;
            # the hash is of that second reading, the one parsed).
            os.lseek(fd, 0, os.SEEK_SET)
            head = _read_head(fd, options.max_bytes, where)
            frame, reader = _parse_all(fd, head, path, size, _Columns(header, label, features), fmt, options, [])
    finally:
        os.close(fd)
    return _table(frame, header, label, features, fmt, options, reader, where)


@dataclass(frozen=True)
class _Columns:
    header: list[str]
    label: str
    features: list[str]


class _NotAllNumbers(Exception):
    """pandas refused a float32 hint: some cell of that column is not a number."""


def _parse_all(
    fd: int,
    head: bytes,
    path: Path,
    size: int,
    columns: _Columns,
    fmt: _Format,
    options: CsvOptions,
    hinted: list[str],
) -> tuple[pd.DataFrame, _HashingReader]:
    where = f"CSV {path}"
    show = options.progress and size >= options.progress_bytes
    with tqdm(
        total=size, desc=f"reading {path.name}", unit="B", unit_scale=True, file=sys.stderr, disable=not show
    ) as bar:
        reader = _HashingReader(fd, head, options.max_bytes, where, bar)
        frame = _parse(reader, columns.header, columns.label, columns.features, fmt, options, where, hinted)
    return frame, reader


def _numeric_in_head(
    text: str, header: list[str], label: str, features: list[str], fmt: _Format, options: CsvOptions
) -> list[str]:
    """Feature columns whose cells in the head are all numbers (or blank): parsed straight to float32, which
    halves the parser's memory for them (float64 columns, then a float32 copy, otherwise)."""
    complete = text[: text.rfind("\n") + 1] if "\n" in text else text
    try:
        sample = pd.read_csv(
            io.StringIO(complete),
            engine="c",
            sep=fmt.delimiter,
            decimal=fmt.decimal,
            thousands=fmt.thousands or None,
            header=0,
            names=header,
            usecols=features,
            na_values={name: list(NA_SPELLINGS) for name in features},
            keep_default_na=False,
        )
    except (ValueError, pd.errors.ParserError):
        return []
    numeric = [name for name in features if pd.api.types.is_numeric_dtype(sample[name])]
    return [name for name in numeric if name not in options.categorical]


def _open_regular(path: Path, max_bytes: int, where: str) -> int:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{where} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{where} cannot be read: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(info.st_mode):
        problem = "is a directory, not a file"
    elif not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file (a FIFO, device or socket); training reads a CSV file from disk"
    elif info.st_size > max_bytes:
        problem = f"is {info.st_size >> 20} MiB, over the size bound of {max_bytes >> 20} MiB (--max-data-mb)"
    if problem:
        os.close(fd)
        raise InputError(f"{where} {problem}")
    os.set_blocking(fd, True)
    return fd


def _read_head(fd: int, limit: int, where: str) -> bytes:
    """At least HEAD_BYTES (or the whole file), and always the whole header line."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, HEAD_BYTES)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise InputError(f"{where} grew past the size bound of {limit >> 20} MiB while it was read")
        if not chunk or (total >= HEAD_BYTES and b"\n" in chunk):
            return b"".join(parts)


def _decode_head(head: bytes, where: str) -> str:
    # The head may end inside a multi-byte character: only that tail is forgiven.
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            raise InputError(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        return head[: exc.start].decode("utf-8-sig")


@dataclass(frozen=True)
class _Format:
    delimiter: str
    decimal: str
    thousands: str


def _sniff(text: str, path: Path, options: CsvOptions, where: str) -> _Format:
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        raise InputError(f"{where} is empty; expected a header row")
    delimiter = options.delimiter or ("\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(lines))
    cells = [cell.strip().strip('"').strip() for line in lines[1:] for cell in line.split(delimiter)]
    decimal = options.decimal or _sniff_decimal(cells, delimiter)
    thousands = options.thousands if options.thousands is not None else _sniff_thousands(cells, decimal)
    if decimal == thousands or delimiter in {decimal, thousands}:
        raise InputError(
            f"{where}: delimiter {delimiter!r}, decimal {decimal!r} and thousands {thousands!r} must differ"
        )
    return _Format(delimiter, decimal, thousands)


def _sniff_delimiter(lines: list[str]) -> str:
    """The candidate found in the header that splits the most lines into the header's count of cells."""

    def score(candidate: str) -> tuple[int, int]:
        expected = lines[0].count(candidate)
        return (sum(line.count(candidate) == expected for line in lines) if expected else 0, expected)

    best = max(DELIMITERS, key=score)
    return best if score(best)[1] else ","


_COMMA_DECIMAL = re.compile(r"^[-+]?\d*,\d+$")
_DOT_DECIMAL = re.compile(r"^[-+]?\d*\.\d+([eE][-+]?\d+)?$")


def _sniff_decimal(cells: list[str], delimiter: str) -> str:
    """',' when the delimiter is not a comma, some cells look like 1,5 and none like 1.5."""
    if delimiter == ",":
        return "."
    comma = any(_COMMA_DECIMAL.match(cell) for cell in cells)
    dot = any(_DOT_DECIMAL.match(cell) for cell in cells)
    return "," if comma and not dot else "."


_THOUSANDS = {".": re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$"), ",": re.compile(r"^[-+]?\d{1,3}(\.\d{3})+(,\d+)?$")}


def _sniff_thousands(cells: list[str], decimal: str) -> str:
    """The other mark when a cell groups digits in threes with it (1,234,567.5) and a decimal mark or a
    second group makes that unambiguous; else none."""
    separator = "," if decimal == "." else "."
    pattern = _THOUSANDS[decimal]
    grouped = [cell for cell in cells if pattern.match(cell) and (cell.count(separator) > 1 or decimal in cell)]
    return separator if grouped else ""


def _header(text: str, delimiter: str, where: str) -> list[str]:
    first = next(csv.reader(io.StringIO(text), delimiter=delimiter), None)
    if first is None:
        raise InputError(f"{where} is empty; expected a header row")
    names = [name.strip() for name in first]
    for index, name in enumerate(names, start=1):
        if not name:
            raise InputError(f"{where} header column {index} has no name")
    # Counted once (linear): names.count per name took 103 s for a 100,000-column header.
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InputError(f"{where} header repeats column names: {', '.join(duplicates)}")
    if len(names) < 2:
        raise InputError(
            f"{where} needs at least one feature column and a label column, header has {names}; no delimiter "
            "among ',', ';', tab, '|' splits it: name yours with --delimiter"
        )
    return names


def _label_name(header: list[str], label_column: str | None, where: str) -> str:
    if label_column is None:
        return header[-1]
    if label_column not in header:
        raise InputError(f"{where} has no label column {label_column!r} (columns: {_listed(header)})")
    return label_column


def _listed(names: list[str]) -> str:
    return ", ".join(names[:_MAX_LISTED_COLUMNS]) + (", ..." if len(names) > _MAX_LISTED_COLUMNS else "")


def _kept_features(header: list[str], label: str, options: CsvOptions, where: str) -> list[str]:
    for flag, names in (("--drop-columns", options.drop_columns), ("--categorical", options.categorical)):
        unknown = [name for name in names if name not in header]
        if unknown:
            raise InputError(f"{where} has no column {unknown[0]!r} ({flag}; columns: {_listed(header)})")
        if label in names:
            raise InputError(f"{where}: {flag} names the label column {label!r}")
    features = [name for name in header if name != label and name not in options.drop_columns]
    if not features:
        raise InputError(f"{where} has no feature column left after --drop-columns")
    return features


def _parse(
    reader: _HashingReader,
    header: list[str],
    label: str,
    features: list[str],
    fmt: _Format,
    options: CsvOptions,
    where: str,
    hinted: list[str],
) -> pd.DataFrame:
    text_columns = [label, *options.categorical]
    dtypes: dict[str, Any] = {name: str for name in text_columns} | {name: np.float32 for name in hinted}
    try:
        with warnings.catch_warnings():
            # A float32-hinted column with a value beyond float32 warns (overflow in the cast): parsed again
            # without hints, that cell is then reported with its value.
            warnings.simplefilter("error" if hinted else "ignore", RuntimeWarning)
            return _read(reader, header, label, features, fmt, options, dtypes)
    except RuntimeWarning as exc:
        raise _NotAllNumbers from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{where} is empty; expected a header row") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{where} is not valid CSV: {' '.join(str(exc).split())}") from None
    except ValueError as exc:  # a float32 hint met a cell that is not a number
        if not hinted:
            raise InputError(f"{where} cannot be parsed: {' '.join(str(exc).split())}") from None
        raise _NotAllNumbers from exc
    except OSError as exc:
        raise InputError(f"{where} cannot be read: {exc.strerror or exc}") from None


def _read(
    reader: _HashingReader,
    header: list[str],
    label: str,
    features: list[str],
    fmt: _Format,
    options: CsvOptions,
    dtypes: dict[str, Any],
) -> pd.DataFrame:
    return pd.read_csv(
        io.BufferedReader(reader, buffer_size=1 << 20),
        engine="c",
        sep=fmt.delimiter,
        decimal=fmt.decimal,
        thousands=fmt.thousands or None,
        header=0,
        names=header,
        usecols=[*features, label],
        dtype=dtypes,
        # The label and declared-categorical columns keep their text (so "NA" can be a class); the other
        # columns read the NA spellings as missing.
        na_values={name: list(NA_SPELLINGS) for name in features if name not in options.categorical},
        keep_default_na=False,
        skip_blank_lines=False,  # keeps row i on line i + 2, for the messages
        encoding="utf-8-sig",
        encoding_errors="strict",
    )


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


def _table(
    frame: pd.DataFrame,
    header: list[str],
    label: str,
    features: list[str],
    fmt: _Format,
    options: CsvOptions,
    reader: _HashingReader,
    where: str,
) -> CsvTable:
    label_text = _stripped(frame[label])
    text_cells = {name: _stripped(frame[name]) for name in features if not pd.api.types.is_numeric_dtype(frame[name])}
    blank = label_text.isna().to_numpy().copy()  # (N,) rows with no cell at all: blank lines, ",,,"
    for name in features:
        blank &= (text_cells[name] if name in text_cells else frame[name]).isna().to_numpy()
    # One newline per row plus the header's (the last row may lack one): then row i sits on line i + 2.
    problems = _Problems(where, reader.newlines in {len(frame), len(frame) + 1})
    keep = np.flatnonzero(~blank)  # (N,) rows that are not blank lines
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
            invalid = _text_column(name, text_cells[name].iloc[keep], keep, fmt, options, problems, numeric, text)
        elif name in features:
            invalid = _numeric_column(name, frame.pop(name).to_numpy()[keep], keep, problems, numeric)
        else:
            continue
        missing = (
            np.isnan(numeric[name]) & ~invalid
            if name in numeric
            else np.fromiter((cell is None for cell in text[name]), dtype=bool, count=len(text[name]))
        )
        missing_counts[name] = int(missing.sum())
        if not options.missing_allowed:
            problems.add(name, "blank", keep[missing])
    problems.raise_if_any()
    labels = tuple(label_text.iloc[keep].tolist())
    names = tuple(name for name in features if name in numeric)
    return CsvTable(
        numeric=_matrix(numeric, names, len(keep)),
        numeric_names=names,
        text=text,
        feature_names=tuple(features),
        labels=labels,
        label_column=label,
        sha256=reader.digest.hexdigest(),
        size=reader.size,
        delimiter=fmt.delimiter,
        decimal=fmt.decimal,
        thousands=fmt.thousands,
        missing_counts=missing_counts,
    )


def _matrix(columns: dict[str, np.ndarray], names: tuple[str, ...], rows: int) -> np.ndarray:
    """(rows, K) float32 from the K columns, each dropped once copied: the columns and the matrix are never
    both whole in memory."""
    matrix = np.empty((rows, len(names)), dtype=np.float32)
    for position, name in enumerate(names):
        matrix[:, position] = columns.pop(name)
    return matrix


def _stripped(column: pd.Series) -> pd.Series:
    """Text cells stripped, with blank and NA-spelled ones as missing (NaN)."""
    if pd.api.types.is_numeric_dtype(column):
        return column
    stripped = column.astype(object).where(column.notna(), None)
    stripped = stripped.map(lambda cell: None if cell is None else str(cell).strip())
    return stripped.where(~stripped.isin(NA_SPELLINGS) & stripped.notna(), np.nan)


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
    fmt: _Format,
    options: CsvOptions,
    problems: _Problems,
    numeric: dict[str, np.ndarray],
    text: dict[str, np.ndarray],
) -> np.ndarray:
    """A column pandas could not read as numbers: text categories when declared so or when no cell is a
    number; otherwise a numeric column with bad cells (each reported)."""
    present = cells.notna().to_numpy()
    none_invalid = np.zeros(len(cells), dtype=bool)
    if name in options.categorical:
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
