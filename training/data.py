"""Data sources (digits, synthetic, CSV), the seeded train/validation split and standardization statistics.

All features are float32 tensors shaped `(N, *input_shape)`, laid out as the architecture's row of
`models.config.ARCHITECTURES` says: `(N, F)` for a flat layout (MLP), `(N, C, H, W)` for an image layout
(CNN). Labels are int64 indices `(N,)` into `class_labels`, which are strings (what the server returns).
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from models.config import ARCHITECTURES
from models.preprocess import MissingStrategy, Preprocessing
from training.csv_data import CsvOptions, read_csv
from training.errors import InputError
from training.tabular import DEFAULT_MAX_CATEGORIES, encode_table

Task = Literal["classification", "regression"]

# The generated set is fixed (its own seed), so --seed changes initialization and shuffling, not the data.
SYNTHETIC_ROWS = 480
SYNTHETIC_SIDE = 4  # 16 features: (N, 16) for the MLP, (N, 1, 4, 4) for the CNN
SYNTHETIC_CLASSES = 3
SYNTHETIC_DATA_SEED = 0
# A numeric label column with more distinct values than this (and than a fifth of the rows), or with a
# fractional value, is taken for a continuous target (regression); a classifier with more classes than
# that trains only when asked for by name (--task classification).
MAX_UNNAMED_CLASSES = 20


@dataclass(frozen=True)
class TableSettings:
    """How a CSV becomes a dataset (the data flags of the CLI)."""

    csv: CsvOptions = field(default_factory=CsvOptions)
    missing: MissingStrategy = "refuse"
    max_categories: int = DEFAULT_MAX_CATEGORIES
    task: Task | None = None  # None: detected from the label column


@dataclass(frozen=True)
class Dataset:
    features: torch.Tensor  # (N, *input_shape) float32; a CSV's numeric cells to fill are NaN until the split
    labels: torch.Tensor  # (N,) int64 class indices; float32 targets for regression
    feature_names: tuple[str, ...]  # names of the flattened features, row-major for images
    class_labels: tuple[str, ...]  # index -> label string; () for regression
    source: str  # "digits", "synthetic" or the CSV path
    preprocessing: Preprocessing | None = None  # a CSV's encoding (fills still None before the split)
    task: Task = "classification"
    task_reason: str = ""  # why this task, when it was detected rather than asked for
    sha256: str = ""  # a CSV's sha256, of the bytes read
    label_column: str = ""  # a CSV's

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Dataset:
        """The same rows on `device` (self when they are there already)."""
        if self.features.device == device:
            return self
        return dataclasses.replace(self, features=self.features.to(device), labels=self.labels.to(device))


@dataclass(frozen=True)
class Split:
    train: Dataset
    val: Dataset

    def to(self, device: torch.device) -> Split:
        return Split(self.train.to(device), self.val.to(device))


def load_dataset(
    data: str, arch: str, label_column: str | None = None, settings: TableSettings | None = None
) -> Dataset:
    """`data` is "digits", "synthetic" or a CSV path, shaped for architecture `arch` (a key of ARCHITECTURES)."""
    image_shape: tuple[int, int, int] | None
    if data == "digits":
        flat, image_shape = _digits()
    elif data == "synthetic":
        flat, image_shape = _synthetic()
    else:
        flat, image_shape = _csv(data, label_column, settings or TableSettings()), None
    row = ARCHITECTURES[arch]
    shape = row.input_shape(flat.features.shape[1], image_shape)
    if shape is None:
        raise InputError(f"--arch {arch} takes {row.layout} rows; {data} rows are {flat.input_shape} features")
    return dataclasses.replace(flat, features=flat.features.reshape(-1, *shape))


def _csv(data: str, label_column: str | None, settings: TableSettings) -> Dataset:
    where = f"CSV {data}"
    table = read_csv(Path(data), label_column, settings.csv)
    features, plan = encode_table(table, settings.missing, settings.max_categories, where)
    column = f"{where} label column {table.label_column!r}"
    task, reason = choose_task(table.labels, table.label_column, settings.task, where)
    class_labels: tuple[str, ...]
    if task == "regression":
        labels, class_labels = regression_targets(table.labels, column), ()
    else:
        labels, class_labels = encode_labels(list(table.labels), column)
    names = plan.feature_names()
    return Dataset(features, labels, names, class_labels, data, plan, task, reason, table.sha256, table.label_column)


def _digits() -> tuple[Dataset, tuple[int, int, int]]:
    """Flat rows (1797, 64) and their image shape (1, 8, 8)."""
    from sklearn.datasets import load_digits

    # Bundled with scikit-learn, no download: 1797 images of 8x8 pixels with values 0..16, classes 0..9.
    bunch = load_digits()
    flat = torch.tensor(bunch.data, dtype=torch.float32)  # (1797, 64)
    labels, class_labels = encode_labels([str(int(y)) for y in bunch.target], "digits")
    names = tuple(f"pixel_{index}" for index in range(64))
    return Dataset(flat, labels, names, class_labels, "digits"), (1, 8, 8)


def _synthetic() -> tuple[Dataset, tuple[int, int, int]]:
    """Flat rows (480, 16) and their image shape (1, 4, 4)."""
    # Gaussian blobs around one random center per class, all drawn from a private generator: no sklearn
    # import (a fast start for tests) and the same rows on every call.
    generator = torch.Generator().manual_seed(SYNTHETIC_DATA_SEED)
    count = SYNTHETIC_SIDE * SYNTHETIC_SIDE
    centers = 1.5 * torch.randn(SYNTHETIC_CLASSES, count, generator=generator)  # (classes, 16)
    classes = torch.arange(SYNTHETIC_ROWS) % SYNTHETIC_CLASSES  # (480,) balanced
    noise = torch.randn(SYNTHETIC_ROWS, count, generator=generator)  # (480, 16)
    flat = centers[classes] + noise + 3.0  # offset: standardization has something to remove
    labels, class_labels = encode_labels([str(int(label)) for label in classes], "synthetic")
    names = tuple(f"x{index}" for index in range(count))
    return Dataset(flat, labels, names, class_labels, "synthetic"), (1, SYNTHETIC_SIDE, SYNTHETIC_SIDE)


def encode_labels(labels: list[str], where: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Label strings -> (N,) int64 indices and the class labels, in an order that depends only on the labels
    (never on hashing, so every process gives the same indices and weights).

    Labels are text compared after Unicode NFC normalization: "é" typed as one code point or as "e" plus a
    combining accent is one class, returned in its NFC form. When every label is a finite number the classes
    sort numerically ("2" before "10"); two spellings of one number ("1", "1.0", "01") are refused, because
    whether they are one class or two is the user's decision. Otherwise the classes sort as strings.
    """
    # Each distinct spelling normalized once, not each of N cells (200,000 labels: 0.08 -> 0.01 s).
    codes, spellings = pd.factorize(np.asarray(labels, dtype=object), use_na_sentinel=False)  # (N,) into spellings
    normalized = [unicodedata.normalize("NFC", spelling) for spelling in spellings]
    distinct = set(normalized)
    _refuse_control_characters(distinct, where)
    values = _numeric_values(distinct)
    if values is None:
        classes = sorted(distinct)
    else:
        _refuse_respelled_numbers(values, where)
        classes = sorted(distinct, key=lambda label: (values[label], label))
    if len(classes) < 2:
        raise InputError(f"{where} has a single class {classes[0]!r}; need at least 2 to train a classifier")
    index = {label: position for position, label in enumerate(classes)}
    class_of_spelling = np.array([index[label] for label in normalized], dtype=np.int64)
    return torch.from_numpy(class_of_spelling[codes]), tuple(classes)


def _refuse_control_characters(labels: set[str], where: str) -> None:
    """A class label is what the server returns and logs: a NUL, escape or line break inside one is refused."""
    for label in sorted(labels):
        bad = next((char for char in label if unicodedata.category(char) in {"Cc", "Zl", "Zp"}), None)
        if bad is not None:
            raise InputError(f"{where}: label {label!r} holds the control character U+{ord(bad):04X}")


def _numeric_values(labels: set[str]) -> dict[str, float] | None:
    """Each label's number when every label is a finite number, else None."""
    values = {}
    for label in labels:
        try:
            value = float(label)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        values[label] = value
    return values


def _refuse_respelled_numbers(values: dict[str, float], where: str) -> None:
    spellings: dict[float, list[str]] = {}
    for label, value in values.items():
        spellings.setdefault(value, []).append(label)
    clashes = sorted((sorted(group) for group in spellings.values() if len(group) > 1), key=lambda g: values[g[0]])
    if clashes:
        shown = " and ".join(repr(label) for label in clashes[0])
        raise InputError(
            f"{where}: labels {shown} are the same number written differently; write each class one way "
            "(as text they would be separate classes, as numbers one)"
        )


def choose_task(labels: tuple[str, ...], column: str, asked: Task | None, where: str) -> tuple[Task, str]:
    """The task and, when detected, why. Detected: regression when the labels are numbers that look
    continuous (a fractional value, or more distinct values than 20 and than a fifth of the rows), else
    classification. A classifier with more classes than that bound is refused unless asked for by name:
    one class per value of a continuous target trains silently to nothing."""
    if asked is not None:
        return asked, ""
    distinct = set(labels)
    limit = max(MAX_UNNAMED_CLASSES, len(labels) // 5)
    values = _numeric_values(distinct)
    if values is not None:
        fractional = next((label for label, value in sorted(values.items()) if not value.is_integer()), None)
        if fractional is not None:
            return "regression", f"label column {column!r}: {fractional!r} is not a whole number"
        if len(values) > limit:
            return "regression", f"label column {column!r}: {len(values)} distinct numbers in {len(labels)} rows"
    elif len(distinct) > limit:
        raise InputError(
            f"{where}: the label column {column!r} has {len(distinct)} classes in {len(labels)} rows (more than "
            f"{limit}); --task classification trains on it anyway"
        )
    return "classification", ""


def regression_targets(labels: tuple[str, ...], where: str) -> torch.Tensor:
    """Label strings -> (N,) float32 targets; every one must be a finite float32 number."""
    bad: list[str] = []
    values: list[float] = []
    for label in labels:
        try:
            value = float(label)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or abs(value) > float(torch.finfo(torch.float32).max):
            bad.append(label)
        values.append(value)
    if bad:
        shown = ", ".join(repr(label) for label in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise InputError(f"{where}: {len(bad)} labels are not finite numbers, needed for regression ({shown})")
    return torch.tensor(values, dtype=torch.float32)


def split_dataset(dataset: Dataset, val_fraction: float, generator: torch.Generator) -> Split:
    """A random split drawn from `generator`: round(N * val_fraction) validation rows, the rest training."""
    total = len(dataset)
    val_count = round(total * val_fraction)
    if val_count < 1 or total - val_count < 2:
        raise InputError(
            f"{dataset.source} has {total} rows: too few for a validation split with --val-fraction "
            f"{val_fraction:g} (need at least 1 validation and 2 training rows)"
        )
    order = torch.randperm(total, generator=generator)  # (N,)
    return Split(train=_subset(dataset, order[val_count:]), val=_subset(dataset, order[:val_count]))


def _subset(dataset: Dataset, rows: torch.Tensor) -> Dataset:
    return dataclasses.replace(dataset, features=dataset.features[rows], labels=dataset.labels[rows])


def standardization_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) std per feature of (N, F) -> (F,), or per channel of (N, C, H, W) -> (C, 1, 1).

    These are the shapes of the model's `standardize.mean` / `standardize.std` buffers. A constant feature
    (std 0, such as digits' always-blank corner pixels) gets std 1, so it maps to 0 instead of NaN.
    Computed in float64 and then rounded once to float32.
    """
    wide = features.to(torch.float64)
    if wide.dim() == 2:
        dims: tuple[int, ...] = (0,)
        keep = False
    else:
        dims, keep = (0, *range(2, wide.dim())), True
    mean = wide.mean(dim=dims, keepdim=keep)
    std = wide.std(dim=dims, keepdim=keep, unbiased=False)
    if keep:
        mean, std = mean.squeeze(0), std.squeeze(0)  # (1, C, 1, 1) -> (C, 1, 1)
    std = torch.where(std == 0, torch.ones_like(std), std)
    return mean.to(torch.float32), std.to(torch.float32)
