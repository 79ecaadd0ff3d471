"""Reading a training CSV: a header row, feature columns (numbers or text) and one label column.

Parsed by pandas' C engine (quoting, CRLF, NA spellings, thousands separators, any one-character delimiter;
0.5-0.7 s for a 200,000 x 50 file where the csv module cell by cell took 5.6 s, with a fifth of its memory;
bench/csv_load.py, docs/training-data.md "Measured"). The file must be a regular file no larger than the size
bound. From PARALLEL_BYTES it parses in blocks on several threads (training/csv_blocks.py), else (and on any
doubt) through one stream that hashes exactly the bytes the parser consumed; either way the manifest's sha256
is of the bytes parsed: a FIFO, a device or a file written while it is read cannot make it describe others.

Delimiter and decimal mark are sniffed from the first lines (`.tsv` means tab) unless given
(training/csv_sniff.py); the bytes come from training/csv_source.py; every bad cell of the whole file is
reported in one line (training/csv_cells.py), e.g. "CSV d.csv: 3 cells cannot be used: column 'b': 2 not
numbers (line 3 'zz', line 9 'q'); column 'a': 1 blank (line 5)".
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock files

from models.preprocess import NA_SPELLINGS
from training.csv_blocks import PARALLEL_BYTES, QUOTE, FileHasher, parse_blocks, workers
from training.csv_cells import check_cells
from training.csv_sniff import CsvFormat, header_names, sniff
from training.csv_source import (
    DEFAULT_MAX_BYTES,
    HashingReader,
    decode_head,
    first_bad_utf8,
    open_regular,
    read_head,
)
from training.errors import InputError

PROGRESS_BYTES = 32 << 20  # files from 32 MiB get a progress line while they load
_MAX_LISTED_COLUMNS = 10
NEVER = 1 << 62  # a parallel_bytes no file reaches


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
    parallel_bytes: int = PARALLEL_BYTES  # files from this size parse in blocks on several threads


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


def read_csv(path: Path, label_column: str | None, options: CsvOptions | None = None) -> CsvTable:
    """Parse `path`; `label_column` None means the last column of the header."""
    options = options or CsvOptions()
    where = f"CSV {path}"
    fd = open_regular(path, options.max_bytes, where)
    try:
        size = os.fstat(fd).st_size
        head = read_head(fd, options.max_bytes, where)
        text = decode_head(head, where)
        fmt = sniff(text, path, options.delimiter, options.decimal, options.thousands, where)
        header = header_names(text, fmt.delimiter, where)
        label = _label_name(header, label_column, where)
        features = _kept_features(header, label, options, where)
        hinted = _numeric_in_head(text, header, label, features, fmt, options)
        source = _Source(fd, path, size, _Columns(header, label, features), fmt)
        frames, reader = _parse_file(source, head, options, hinted)
        try:
            cells = check_cells(
                frames,
                header,
                label,
                features,
                fmt,
                options.categorical,
                options.missing_allowed,
                reader.newlines,
                where,
            )
        finally:
            reader.finish()  # the hash is complete (a FileHasher reads the descriptor: before it closes)
    finally:
        os.close(fd)
    return CsvTable(
        numeric=cells.numeric,
        numeric_names=cells.numeric_names,
        text=cells.text,
        feature_names=tuple(features),
        labels=cells.labels,
        label_column=label,
        sha256=reader.digest.hexdigest(),
        size=reader.size,
        delimiter=fmt.delimiter,
        decimal=fmt.decimal,
        thousands=fmt.thousands,
        missing_counts=cells.missing_counts,
    )


@dataclass(frozen=True)
class _Columns:
    header: list[str]
    label: str
    features: list[str]


class _NotAllNumbers(Exception):
    """pandas refused a float32 hint: some cell of that column is not a number."""


@dataclass(frozen=True)
class _Source:
    """The checked file being parsed: its open descriptor, path and size, and what the head told."""

    fd: int
    path: Path
    size: int
    columns: _Columns
    fmt: CsvFormat

    @property
    def where(self) -> str:
        return f"CSV {self.path}"


def _parse_file(
    source: _Source, head: bytes, options: CsvOptions, hinted: list[str]
) -> tuple[list[pd.DataFrame], FileHasher | HashingReader]:
    try:
        return _parse_all(source, head, options, hinted)
    except _NotAllNumbers:
        # A column the first lines showed as numbers holds something else further down: parse again
        # without the float32 hints, so every bad cell can be reported (a regular file can be re-read;
        # the hash is of that second reading, the one parsed). One stream: blocks would fail again.
        os.lseek(source.fd, 0, os.SEEK_SET)
        head = read_head(source.fd, options.max_bytes, source.where)
        return _parse_all(source, head, replace(options, parallel_bytes=NEVER), [])


def _parse_all(
    source: _Source, head: bytes, options: CsvOptions, hinted: list[str]
) -> tuple[list[pd.DataFrame], FileHasher | HashingReader]:
    """The data rows (a frame per block, or one) and the hash of exactly the bytes parsed: in blocks on
    several threads when the file is large and nothing speaks against it (training/csv_blocks.py), else as
    one hashed stream."""
    show = options.progress and source.size >= options.progress_bytes
    with tqdm(
        total=source.size, desc=f"reading {source.path.name}", unit="B", unit_scale=True, file=sys.stderr,
        disable=not show,
    ) as bar:  # fmt: skip
        # Blocks start after the header line: a head without a line end (one line, no data rows) is a stream's.
        if source.size >= options.parallel_bytes and b"\n" in head and QUOTE not in head and workers() > 1:
            parsed = _parse_in_blocks(source, head, options, hinted, bar)
            if parsed is not None:
                return parsed
            bar.reset(total=source.size)
        reader = HashingReader(source.fd, head, options.max_bytes, source.where, bar)
        try:
            frame = _parse(reader, source.columns, source.fmt, options, source.where, hinted)
        finally:
            reader.finish()
    return [frame], reader


def _parse_in_blocks(
    source: _Source, head: bytes, options: CsvOptions, hinted: list[str], bar: tqdm
) -> tuple[list[pd.DataFrame], FileHasher] | None:
    """The blocks' frames and the file's hasher (read_csv joins it after the cell check), or None: the caller
    then parses the one stream."""
    hasher = FileHasher(source.fd, options.max_bytes, source.where)
    header_end = head.index(b"\n") + 1
    bar.update(header_end)
    arguments = _arguments(source.columns, source.fmt, options, hinted)
    try:
        with _warnings_as_errors(bool(hinted)):
            blocks = parse_blocks(
                source.fd, header_end, source.size, lambda rows: pd.read_csv(rows, header=None, **arguments), bar
            )
    except BaseException:  # an I/O error or an interrupt: the hasher must not outlive the descriptor
        hasher.join()
        raise
    if blocks is None:
        hasher.finish()  # refuses a file written to meanwhile
        return None
    hasher.newlines = blocks.newlines + 1  # and the header line's
    return blocks.frames, hasher


def _numeric_in_head(
    text: str, header: list[str], label: str, features: list[str], fmt: CsvFormat, options: CsvOptions
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


def _arguments(columns: _Columns, fmt: CsvFormat, options: CsvOptions, hinted: list[str]) -> dict[str, Any]:
    """pandas' arguments: the label and --categorical columns as text, the hinted columns as float32."""
    text_columns = [columns.label, *options.categorical]
    dtypes: dict[str, Any] = {name: str for name in text_columns} | {name: np.float32 for name in hinted}
    return _read_arguments(columns, fmt, dtypes)


@contextlib.contextmanager
def _warnings_as_errors(hinted: bool) -> Iterator[None]:
    with warnings.catch_warnings():
        # A float32-hinted column with a value beyond float32 warns (overflow in the cast): parsed again
        # without hints, that cell is then reported with its value.
        warnings.simplefilter("error" if hinted else "ignore", RuntimeWarning)
        warnings.simplefilter("error", pd.errors.ParserWarning)
        yield


def _parse(
    reader: HashingReader,
    columns: _Columns,
    fmt: CsvFormat,
    options: CsvOptions,
    where: str,
    hinted: list[str],
) -> pd.DataFrame:
    arguments = _arguments(columns, fmt, options, hinted)
    try:
        with _warnings_as_errors(bool(hinted)):
            return pd.read_csv(reader, header=0, **arguments)
    except pd.errors.ParserWarning:  # pandas' only warning here: the first data row is longer than the header
        count = len(columns.header)
        raise InputError(
            f"{where} is not valid CSV: the first data row has more cells than the header's {count}"
        ) from None
    except RuntimeWarning as exc:
        raise _NotAllNumbers from exc
    except UnicodeDecodeError as exc:
        place, reason = first_bad_utf8(reader.fd) or (exc.start, exc.reason)
        raise InputError(f"{where} is not UTF-8 text (byte {place}: {reason})") from None
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


def _read_arguments(columns: _Columns, fmt: CsvFormat, dtypes: dict[str, Any]) -> dict[str, Any]:
    dropped = len(columns.features) + 1 < len(columns.header)
    return {
        "engine": "c",
        "sep": fmt.delimiter,
        "decimal": fmt.decimal,
        "thousands": fmt.thousands or None,
        "names": columns.header,
        # usecols only when columns are dropped: pandas' C engine takes a slower path with it (0.2-0.3 s more
        # on a 200,000 x 50 file, even when it names every column).
        "usecols": [*columns.features, columns.label] if dropped else None,
        # Without usecols, a first row with more cells than the header would make pandas take column 1 as the
        # index (every value shifted); False keeps the columns, and the row is refused (_parse).
        "index_col": False,
        "dtype": dtypes,
        # One NA set for every column (the label and text columns go through the same spellings after
        # stripping anyway, csv_cells._stripped).
        "na_values": list(NA_SPELLINGS),
        "keep_default_na": False,
        "skip_blank_lines": False,  # keeps row i on line i + 2, for the messages
        # "utf-8", not "utf-8-sig": any other spelling makes pandas wrap a stream in a TextIOWrapper that
        # decodes all of it to str for the C parser to encode back; the C tokenizer skips a BOM itself.
        "encoding": "utf-8",
        "encoding_errors": "strict",
    }
