"""CSV columns -> the model's encoded input matrix, and the `models.preprocess.Preprocessing` that a server
applies to one raw row to get the same vector.

Two steps, because missing-value statistics come from the training split only:
1. `encode_table` (before the split): numeric columns as float32 with NaN where a cell was missing, text
   columns one-hot over their vocabulary (every category of the file, sorted; a missing cell all 0), an
   is-missing indicator after every column that has blank cells (when --missing allows them).
2. `fill_missing` (after the split): each numeric column's fill value (mean, median or the constant) from
   the training rows, written over its NaN in both splits; the fills complete the Preprocessing.
The vectorized encoding here and the per-row `Preprocessing.encode_row` give the same bits (a test checks
every row of a table through both).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from models.preprocess import MAX_CATEGORIES, MAX_TEXT, ColumnSpec, MissingStrategy, Preprocessing
from training.csv_data import CsvTable
from training.errors import InputError

DEFAULT_MAX_CATEGORIES = 100


def encode_table(
    table: CsvTable, missing: MissingStrategy, max_categories: int, where: str
) -> tuple[torch.Tensor, Preprocessing]:
    """-> (N, W) float32 (NaN in numeric cells still to fill) and the Preprocessing without its fills."""
    columns: list[ColumnSpec] = []
    blocks: list[np.ndarray] = []  # (N, width) per column, in order
    numeric_position = {name: position for position, name in enumerate(table.numeric_names)}
    for name in table.feature_names:
        if len(name) > MAX_TEXT:
            raise InputError(f"{where} column name {name[:40]!r}... is longer than {MAX_TEXT} characters")
        indicator = missing != "refuse" and table.missing_counts.get(name, 0) > 0
        if name in numeric_position:
            values = table.numeric[:, numeric_position[name]]  # (N,)
            columns.append(ColumnSpec(name, "numeric", fill=None, indicator=indicator))
            blocks.append(values[:, None])
            present = ~np.isnan(values)
        else:
            cells = table.text[name]  # (N,) object
            categories = _vocabulary(cells, name, max_categories, where)
            columns.append(ColumnSpec(name, "categorical", categories=categories, indicator=indicator))
            blocks.append(_one_hot(cells, categories))
            present = np.fromiter((cell is not None for cell in cells), dtype=bool, count=len(cells))
        if indicator:
            blocks.append((~present).astype(np.float32)[:, None])
    plan = Preprocessing(tuple(columns), missing, table.decimal, table.thousands)
    _check_encoded_names(plan, where)
    if len(blocks) == table.numeric.shape[1]:  # numeric columns only, no indicators: the matrix as read
        return torch.from_numpy(table.numeric), plan
    return torch.from_numpy(np.concatenate(blocks, axis=1)), plan


def _vocabulary(cells: np.ndarray, name: str, max_categories: int, where: str) -> tuple[str, ...]:
    categories = sorted({cell for cell in cells.tolist() if cell is not None})
    if not categories:
        raise InputError(f"{where} column {name!r} has no values (every cell is blank); drop it with --drop-columns")
    if len(categories) > max_categories:
        raise InputError(
            f"{where} column {name!r} has {len(categories)} distinct text values, more than --max-categories "
            f"{max_categories} (up to {MAX_CATEGORIES}); drop it (--drop-columns {name}) or raise the bound"
        )
    long = next((value for value in categories if len(value) > MAX_TEXT), None)
    if long is not None:
        raise InputError(f"{where} column {name!r} has a category longer than {MAX_TEXT} characters: {long[:40]!r}...")
    return tuple(categories)


def _one_hot(cells: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    """(N,) strings -> (N, len(categories)) float32 of 0/1; a missing cell is all 0."""
    index = {value: position for position, value in enumerate(categories)}
    codes = np.array([index.get(cell, -1) for cell in cells.tolist()], dtype=np.int64)  # (N,), -1 missing
    encoded = np.zeros((len(cells), len(categories)), dtype=np.float32)
    present = codes >= 0
    encoded[np.flatnonzero(present), codes[present]] = 1.0
    return encoded


def _check_encoded_names(plan: Preprocessing, where: str) -> None:
    names = plan.feature_names()
    if len(set(names)) != len(names):
        seen: set[str] = set()
        clash = next(name for name in names if name in seen or seen.add(name))  # type: ignore[func-returns-value]
        raise InputError(f"{where}: two encoded inputs would both be named {clash!r}; rename a column")


def fill_missing(
    plan: Preprocessing, train: torch.Tensor, others: list[torch.Tensor], fill_value: float
) -> Preprocessing:
    """Fill each numeric column's NaN in `train` (N, W) and every tensor of `others` in place, with the
    statistic of its training values; returns the Preprocessing with the fills. A no-op under refuse."""
    if plan.missing == "refuse":
        return plan
    columns: list[ColumnSpec] = []
    position = 0
    for column in plan.columns:
        filled = column
        if column.kind == "numeric":
            fill = _fill(train[:, position].numpy(), plan.missing, fill_value)
            for tensor in (train, *others):
                values = tensor[:, position]  # (N,) a view: the fill lands in the tensor
                values[torch.isnan(values)] = fill
            filled = dataclasses.replace(column, fill=fill)
        columns.append(filled)
        position += column.width
    return dataclasses.replace(plan, columns=tuple(columns))


def _fill(values: np.ndarray, missing: MissingStrategy, constant: float) -> float:
    """The float32 value for a missing cell, from a column's (N,) training values (NaN where missing)."""
    present = values[~np.isnan(values)].astype(np.float64)
    if missing == "constant" or not len(present):
        statistic = constant if missing == "constant" else 0.0  # a column blank in every training row: 0
    elif missing == "mean":
        statistic = float(present.mean())
    else:
        statistic = float(np.median(present))
    fill = float(np.float32(statistic))
    if not math.isfinite(fill):
        raise InputError(f"the fill value {statistic!r} does not fit in float32")
    return fill
