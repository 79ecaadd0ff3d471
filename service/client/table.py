"""The client's files: a CSV of input rows read in chunks, and the answers written in input order.

Input: a header line, then one row per line. When the model names its features and the header holds every
one of them, those columns are used in the model's order (others, e.g. a label column, are skipped);
otherwise the file must have exactly as many columns as the model has inputs, in order. Every cell must be
a finite number. Rows become float32 as the server makes them (text -> float64 -> float32).

Output: `label,prob_<class>...`, probabilities written as the shortest decimal that reads back to the same
float32 (each float32 widened exactly to float64, then repr), so the file holds the exact bits.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

from service.engine.types import Float32Array, Int64Array


class ClientError(Exception):
    """Bad input (exit 2) or a failure talking to the server (exit 1); one line."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ModelInput:
    """What the client knows of the model's input: shape of one row and the feature names (may be empty)."""

    shape: tuple[int, ...]
    feature_names: tuple[str, ...]
    class_labels: tuple[str, ...]

    @property
    def features(self) -> int:
        return math.prod(self.shape)


def column_indices(header: Sequence[str], model: ModelInput, where: str) -> list[int]:
    names = [name.strip() for name in header]
    if model.feature_names and set(model.feature_names) <= set(names):
        return [names.index(feature) for feature in model.feature_names]
    if len(names) != model.features:
        wanted = f" or columns named {', '.join(model.feature_names[:5])}..." if model.feature_names else ""
        raise ClientError(f"{where}: the header has {len(names)} columns; the model takes {model.features}{wanted}")
    return list(range(len(names)))


def read_chunks(handle: IO[str], model: ModelInput, rows_per_chunk: int, where: str) -> Iterator[Float32Array]:
    """The file's rows, `rows_per_chunk` at a time, as float32 arrays (n, *model.shape)."""
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise ClientError(f"{where}: empty file (a header line, then one row per line)")
    columns = column_indices(header, model, where)
    rows: list[list[float]] = []
    for line_number, cells in enumerate(reader, start=2):
        if not cells:
            continue
        rows.append(_numbers(cells, columns, where, line_number))
        if len(rows) == rows_per_chunk:
            yield _as_rows(rows, model.shape)
            rows = []
    if rows:
        yield _as_rows(rows, model.shape)


def _numbers(cells: list[str], columns: list[int], where: str, line_number: int) -> list[float]:
    try:
        values = [float(cells[index]) for index in columns]
    except (ValueError, IndexError):
        raise ClientError(f"{where} line {line_number}: a missing or non-numeric cell") from None
    if not all(math.isfinite(value) for value in values):
        raise ClientError(f"{where} line {line_number}: a cell is not a finite number")
    return values


def _as_rows(rows: list[list[float]], shape: tuple[int, ...]) -> Float32Array:
    return np.asarray(rows, dtype=np.float64).astype(np.float32).reshape(len(rows), *shape)


def write_header(handle: IO[str], class_labels: Sequence[str]) -> None:
    csv.writer(handle, lineterminator="\n").writerow(["label", *(f"prob_{label}" for label in class_labels)])


def write_answers(
    handle: IO[str], class_labels: Sequence[str], class_index: Int64Array, probabilities: Float32Array
) -> None:
    """One line per row: its label and its probabilities (exact float32 bits, see the module doc)."""
    writer = csv.writer(handle, lineterminator="\n")
    for index, row in zip(class_index.tolist(), probabilities.tolist(), strict=True):
        writer.writerow([class_labels[index], *map(repr, row)])
