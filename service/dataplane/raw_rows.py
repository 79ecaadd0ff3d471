"""V1 instances as raw rows for a model trained on a CSV: objects keyed by the CSV's column names, with
numbers, strings and nulls as they are in the file, encoded by the manifest's preprocessing
(models/preprocess.py, the same function training's encoding is checked against). List rows are left as
they are: they carry the encoded vector, like V2 tensors."""

from __future__ import annotations

from typing import Any

from models.preprocess import PreprocessError, Preprocessing
from service.errors import BadRequest


def encode_raw_rows(instances: list[Any], preprocessing: Preprocessing) -> list[Any]:
    """Every object row -> its encoded row (a list of exact float32 values); a BadRequest naming the first
    row that cannot be encoded (unknown or missing column, unknown category, a null the model refuses)."""
    encoded: list[Any] = []
    for index, row in enumerate(instances):
        if not isinstance(row, dict):
            encoded.append(row)
            continue
        try:
            encoded.append(preprocessing.encode_row(row))
        except PreprocessError as exc:
            raise BadRequest(f"instances row {index}: {exc}") from None
    return encoded
