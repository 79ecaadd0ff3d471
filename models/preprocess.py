"""Tabular preprocessing that travels with the weights: one raw row -> the model's float32 input vector.

Training fits it on a CSV (training/tabular.py) and stores it in the manifest (`input.preprocessing`); the
server applies `encode_row` to V1 objects keyed by the CSV's column names, so a client sends a row as it is
in the CSV (numbers, text, null). The encoded vector (what positional V1 rows and V2 tensors carry) is, per
raw column in header order:

- numeric: the value as float32 (a missing cell: the stored `fill`), then a 0/1 is-missing indicator when
  the column had blank cells in training;
- categorical: one 0/1 input per category of the stored vocabulary (a missing cell: all 0), then the
  indicator when the column had blank cells in training.

Standardization is not here: the model's own Standardize layer holds the training split's mean and std of
every encoded input. A category the vocabulary does not hold is refused (a 400 at the server), never
mapped silently. Pure and torch-free: the same function gives the same bits wherever it runs, per row, so
batching cannot change it. The manifest is an untrusted file: `from_json` checks every size and value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

ColumnKind = Literal["numeric", "categorical"]
MissingStrategy = Literal["refuse", "mean", "median", "constant"]
MISSING_STRATEGIES: tuple[str, ...] = get_args(MissingStrategy)
# Cells read as missing, in training (the CSV reader) and in string values at serving; compared exactly.
NA_SPELLINGS: tuple[str, ...] = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?")
_NA = frozenset(NA_SPELLINGS)
# Bounds on what a manifest may claim (checked before anything is allocated from it).
MAX_COLUMNS = 10_000
MAX_CATEGORIES = 1_000  # per categorical column
MAX_ENCODED_WIDTH = 100_000
MAX_TEXT = 256  # characters of a column name or a category
FLOAT32_MAX = float(np.finfo(np.float32).max)
MISSING_SUFFIX = ":missing"


class PreprocessError(ValueError):
    """A raw value the preprocessing cannot encode, or a manifest it cannot hold; the message names it."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    categories: tuple[str, ...] = ()  # categorical: the vocabulary, one input each, in this order
    fill: float | None = None  # numeric: the float32 value of a missing cell; None: a missing cell is refused
    indicator: bool = False  # an extra input, 1.0 when the cell was missing

    @property
    def width(self) -> int:
        return (1 if self.kind == "numeric" else len(self.categories)) + int(self.indicator)

    def encoded_names(self) -> list[str]:
        names = [self.name] if self.kind == "numeric" else [f"{self.name}={value}" for value in self.categories]
        return [*names, self.name + MISSING_SUFFIX] if self.indicator else names

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "indicator": self.indicator}
        if self.kind == "numeric":
            data["fill"] = self.fill
        else:
            data["categories"] = list(self.categories)
        return data


@dataclass(frozen=True)
class Preprocessing:
    columns: tuple[ColumnSpec, ...]
    missing: MissingStrategy = "refuse"
    decimal: str = "."  # how the CSV wrote decimals: numeric strings at serving are read the same way
    thousands: str = ""  # the CSV's thousands separator ("" none)

    @property
    def width(self) -> int:
        return sum(column.width for column in self.columns)

    @property
    def raw_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def feature_names(self) -> tuple[str, ...]:
        """One name per encoded input: 'age', 'color=red', 'age:missing'."""
        return tuple(name for column in self.columns for name in column.encoded_names())

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "tabular",
            "missing": self.missing,
            "decimal": self.decimal,
            "thousands": self.thousands,
            "columns": [column.to_json() for column in self.columns],
        }

    @classmethod
    def from_json(cls, data: Any) -> Preprocessing:
        """Rebuild and validate (raises PreprocessError); every size is bounded before it is used."""
        if not isinstance(data, dict) or data.get("kind") != "tabular":
            raise PreprocessError('preprocessing must be an object with "kind": "tabular"')
        missing, decimal, thousands = data.get("missing"), data.get("decimal", "."), data.get("thousands", "")
        if missing not in MISSING_STRATEGIES:
            raise PreprocessError(f"preprocessing missing must be one of {MISSING_STRATEGIES}, got {missing!r}")
        if decimal not in {".", ","} or thousands not in {"", ",", ".", " ", "'", "_"} or decimal == thousands:
            raise PreprocessError(f"preprocessing decimal {decimal!r} / thousands {thousands!r} are not supported")
        raw_columns = data.get("columns")
        if not isinstance(raw_columns, list) or not 1 <= len(raw_columns) <= MAX_COLUMNS:
            raise PreprocessError(f"preprocessing columns must be a list of 1 to {MAX_COLUMNS} columns")
        columns = tuple(_column_from_json(column, missing) for column in raw_columns)
        built = cls(columns, missing, decimal, thousands)
        if len(set(built.raw_names)) != len(columns):
            raise PreprocessError("preprocessing column names repeat")
        if built.width > MAX_ENCODED_WIDTH:
            raise PreprocessError(f"preprocessing encodes {built.width} inputs, more than {MAX_ENCODED_WIDTH}")
        names = built.feature_names()
        if len(set(names)) != len(names):
            raise PreprocessError("preprocessing encoded input names repeat")
        return built

    def encode_row(self, row: Mapping[str, Any]) -> list[float]:
        """A raw row {column: number | string | None} -> the encoded row, `width` floats that are exact
        float32 values. Every column must be present and no other; raises PreprocessError naming the first
        problem."""
        unknown = next((key for key in row if key not in self._index), None)
        if unknown is not None:
            raise PreprocessError(f"unknown feature {_clip(unknown)}; {self._hint()}")
        if len(row) != len(self.columns):
            missing = [column.name for column in self.columns if column.name not in row]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise PreprocessError(f"missing feature {missing[0]!r}{more}; {self._hint()}")
        encoded: list[float] = []
        for column in self.columns:
            encoded += self._encode_cell(column, row[column.name])
        return encoded

    def _hint(self) -> str:
        names = self.raw_names
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        return f"the model's features are: {shown}"

    @functools.cached_property
    def _index(self) -> frozenset[str]:
        return frozenset(self.raw_names)

    def _encode_cell(self, column: ColumnSpec, value: Any) -> list[float]:
        """One cell -> its column's `width` inputs."""
        cell = _cell(value, column.name)
        indicator = [float(cell is None)] if column.indicator else []
        if cell is None:
            if self.missing == "refuse":
                raise PreprocessError(
                    f"feature {column.name!r} is missing and this model was trained with --missing refuse"
                )
            # numeric: the training split's fill; categorical: no category (all 0)
            missing = [column.fill if column.fill is not None else 0.0] if column.kind == "numeric" else []
            return missing + [0.0] * len(column.categories) + indicator
        if column.kind == "numeric":
            return [self._number(cell, column.name), *indicator]
        return self._one_hot(cell, column) + indicator

    def _number(self, cell: int | float | str, name: str) -> float:
        if isinstance(cell, str):
            text = cell.replace(self.thousands, "") if self.thousands else cell
            text = text.replace(self.decimal, ".") if self.decimal != "." else text
            try:
                number = float(text)
            except ValueError:
                raise PreprocessError(f"feature {name!r}: {_clip(cell)} is not a number") from None
        else:
            number = float(cell) if abs(cell) < 2**1024 else math.inf
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise PreprocessError(f"feature {name!r}: {_clip(cell)} is not a finite float32 number")
        return float(np.float32(number))

    @staticmethod
    def _one_hot(cell: int | float | str, column: ColumnSpec) -> list[float]:
        if type(cell) is int:
            cell = str(cell)
        if not isinstance(cell, str):
            raise PreprocessError(f"feature {column.name!r} is categorical: send its value as a string")
        try:
            position = column.categories.index(cell)
        except ValueError:
            shown = ", ".join(map(repr, column.categories[:8])) + (", ..." if len(column.categories) > 8 else "")
            raise PreprocessError(
                f"feature {column.name!r}: unknown category {_clip(cell)} (the model knows {shown})"
            ) from None
        values = [0.0] * len(column.categories)
        values[position] = 1.0
        return values


def _cell(value: Any, name: str) -> int | float | str | None:
    """A JSON value as a cell: None for a missing one (null or an NA spelling), a stripped string or a number."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return None if text in _NA else text
    if type(value) is int:  # a number for a numeric column, its decimal text for a categorical one (codes)
        return value
    if type(value) is float:
        return value
    raise PreprocessError(f"feature {name!r}: {_clip(value)} is not a number, a string or null")


def _column_from_json(data: Any, missing: str) -> ColumnSpec:
    if not isinstance(data, dict):
        raise PreprocessError("preprocessing column must be an object")
    name, kind, indicator = data.get("name"), data.get("kind"), data.get("indicator", False)
    if not _short_text(name) or not name:
        raise PreprocessError(f"preprocessing column name must be a string of 1 to {MAX_TEXT} characters")
    if kind not in get_args(ColumnKind) or not isinstance(indicator, bool):
        raise PreprocessError(f"preprocessing column {name!r}: kind must be numeric or categorical")
    if kind == "numeric":
        fill = data.get("fill")
        valid_fill = fill is None or (type(fill) in {int, float} and math.isfinite(fill) and abs(fill) <= FLOAT32_MAX)
        if not valid_fill or (fill is None) != (missing == "refuse"):
            raise PreprocessError(f"preprocessing column {name!r}: invalid fill {fill!r} for missing {missing!r}")
        return ColumnSpec(name, "numeric", fill=None if fill is None else float(np.float32(fill)), indicator=indicator)
    categories = data.get("categories")
    if not isinstance(categories, list) or not 1 <= len(categories) <= MAX_CATEGORIES:
        raise PreprocessError(f"preprocessing column {name!r}: categories must be a list of 1 to {MAX_CATEGORIES}")
    if not all(_short_text(value) and value.strip() == value and value not in _NA for value in categories):
        raise PreprocessError(f"preprocessing column {name!r}: a category is not a stripped, non-missing string")
    if len(set(categories)) != len(categories):
        raise PreprocessError(f"preprocessing column {name!r}: categories repeat")
    return ColumnSpec(name, "categorical", categories=tuple(categories), indicator=indicator)


def _short_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
