"""Decoding and validating input rows: one place for every rule about what a row may be.

Rows arrive as JSON lists (V1 instances, V2 JSON tensors) or raw little-endian bytes (V2 binary
extension) and leave as a (N, *input_shape) float32 array, or as a BadRequest naming the first bad row.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np

from models.preprocess import Preprocessing
from service.dataplane.raw_rows import encode_raw_rows
from service.engine.types import Float32Array, all_finite
from service.errors import BadRequest

# bool is deliberately absent: JSON true/false is not a feature value, although numpy would take it as 1/0.
_NUMBER_TYPES = frozenset({float, int})


def rows_from_nested(rows: Any, input_shape: tuple[int, ...], what: str = "instances") -> Float32Array:
    """rows: a list of N rows, each shaped like input_shape (nested lists) or flat -> (N, *input_shape)."""
    if not isinstance(rows, list):
        raise BadRequest(f'"{what}" must be a list of rows, got {type(rows).__name__}')
    if not rows:
        raise BadRequest(f'"{what}" is empty: send at least one row')
    row_size = math.prod(input_shape)
    flat = _flat_rows(rows, row_size)
    if flat is not None:  # the usual body
        return finite_rows(flat.reshape((len(rows), *input_shape)), what)
    for index, row in enumerate(rows):
        problem = _row_problem(row, input_shape, row_size)
        if problem:
            raise BadRequest(f"{what} row {index}: {problem}")
    try:
        array = _to_float32(rows)
    except ValueError:  # nested and flat rows mixed in one request: each is valid, the mixture is ragged
        array = np.stack([_to_float32(row).reshape(input_shape) for row in rows])
    return finite_rows(array.reshape((len(rows), *input_shape)), what)


def _flat_rows(rows: list[Any], row_size: int) -> Float32Array | None:
    """(N, row_size) float32 when every row is a flat list of row_size numbers, else None (the general path
    then names the first bad row). array("f") rounds each value as numpy's float32 cast does (compared bit for
    bit over 200,000 values, ints beyond 2**53 and values beyond float32's range included) and makes values
    beyond float32's range inf without numpy's overflow warning: a third of the cost of np.array in an errstate."""
    for row in rows:
        if type(row) is not list or len(row) != row_size:
            return None
    values = rows[0] if len(rows) == 1 else list(chain.from_iterable(rows))
    if _elements_problem(values):
        return None
    return np.frombuffer(array("f", values), dtype=np.float32).reshape(len(rows), row_size)


def rows_from_instances(
    instances: Any,
    input_shape: tuple[int, ...],
    feature_names: tuple[str, ...],
    preprocessing: Preprocessing | None = None,
) -> Float32Array:
    """KServe V1 instances -> (N, *input_shape). A row is a list (as in `rows_from_nested`) or an object
    keyed by the model's feature names (the manifest's, one per flattened input value, in row-major order);
    both may be mixed in one request. An object must name every feature exactly once and nothing else.
    A model with `preprocessing` takes objects keyed by its raw CSV columns instead (service/raw_rows.py)."""
    if isinstance(instances, list) and preprocessing is not None:
        instances = encode_raw_rows(instances, preprocessing)
    elif isinstance(instances, list) and any(isinstance(row, dict) for row in instances):
        order = _feature_order(feature_names, input_shape)
        instances = [
            _row_from_object(row, index, order) if isinstance(row, dict) else row for index, row in enumerate(instances)
        ]
    return rows_from_nested(instances, input_shape)


def _feature_order(feature_names: tuple[str, ...], input_shape: tuple[int, ...]) -> dict[str, int]:
    """feature name -> its position in the flattened row; a BadRequest when the model has no usable names."""
    if len(feature_names) != math.prod(input_shape) or len(set(feature_names)) != len(feature_names):
        raise BadRequest(
            "this model has no feature names for its inputs, so instances must be lists of numbers, not objects"
        )
    return {name: position for position, name in enumerate(feature_names)}


def _row_from_object(row: dict[str, Any], index: int, order: dict[str, int]) -> list[Any]:
    """An object row as the flat list of its values in feature order; checks names and value types."""
    unknown = [key for key in row if key not in order]
    if unknown:
        raise BadRequest(f"instances row {index}: unknown feature {_clip(unknown[0])}; {_features_hint(order)}")
    if len(row) != len(order):
        missing = [name for name in order if name not in row]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BadRequest(f"instances row {index}: missing feature {missing[0]!r}{more}; {_features_hint(order)}")
    values = [row[name] for name in order]
    bad = next((name for name, value in zip(order, values, strict=True) if type(value) not in _NUMBER_TYPES), None)
    if bad is not None:
        raise BadRequest(f"instances row {index}: feature {bad!r}: {_clip(row[bad])} is not a number")
    return values


def _features_hint(order: dict[str, int]) -> str:
    names = list(order)
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return f"the model's features are: {shown}"


def _clip(value: Any) -> str:
    """repr of a client value, cut to 60 characters (an error message must not echo megabytes back)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rows_from_flat(
    values: Any, shape: tuple[int, ...], input_shape: tuple[int, ...], what: str, datatype: str = "FP32"
) -> Float32Array:
    """A V2 tensor: `values` row-major (flat or nested) with declared `shape` (N, ...) -> (N, *input_shape).

    For INT32/INT64 tensors every value must be a JSON integer within the type's range."""
    array = _rows_from_flat(values, shape, input_shape, what)
    if datatype in _INTEGER_RANGES:
        _check_integers(values, datatype, math.prod(input_shape), what)
    return array


_INTEGER_RANGES = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}


def _check_integers(values: list[Any], datatype: str, row_size: int, what: str) -> None:
    low, high = _INTEGER_RANGES[datatype]
    for index, value in enumerate(_flatten(values)):
        if type(value) is not int:
            raise BadRequest(f"{what} row {index // row_size}: element {value!r} is not an {datatype} value")
        if not low <= value <= high:
            raise BadRequest(f"{what} row {index // row_size}: element {value} is out of range for {datatype}")


def _flatten(values: list[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


def _rows_from_flat(values: Any, shape: tuple[int, ...], input_shape: tuple[int, ...], what: str) -> Float32Array:
    rows = _batch_count(shape, input_shape, what)
    if isinstance(values, list) and values and isinstance(values[0], list):
        array = np.asarray(rows_from_nested(values, _row_shape(shape), what))
    else:
        if not isinstance(values, list):
            raise BadRequest(f'{what} "data" must be a list of numbers')
        bad = next((i for i, value in enumerate(values) if type(value) not in _NUMBER_TYPES), None)
        if bad is not None:
            row_size = math.prod(input_shape)
            raise BadRequest(f"{what} row {bad // row_size}: element {values[bad]!r} is not a number")
        array = _to_float32(values)
    return _shaped(array, shape, rows, input_shape, what)


def rows_from_bytes(
    raw: bytes, datatype: str, shape: tuple[int, ...], input_shape: tuple[int, ...], what: str
) -> Float32Array:
    """A V2 binary tensor: little-endian values of `datatype`, row-major, declared `shape`."""
    rows = _batch_count(shape, input_shape, what)
    dtype = _BINARY_DTYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"{what}: binary datatype {datatype} is not supported; use FP32 (or FP64)")
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise BadRequest(
            f"{what}: {len(raw)} bytes of binary data, expected {math.prod(shape) * dtype.itemsize} "
            f"for shape {list(shape)} of {datatype}"
        )
    array = _to_float32(np.frombuffer(raw, dtype=dtype))
    return _shaped(array, shape, rows, input_shape, what)


_BINARY_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


# More digits than any count or version this server could hold; also keeps int() below Python's 4,300-digit
# conversion limit, which raises ValueError (a 500) on longer strings.
MAX_DIGITS = 18


def ascii_int(text: str) -> int | None:
    """A non-negative decimal integer of at most 18 ASCII digits, else None ('²'.isdigit() is True)."""
    return int(text) if len(text) <= MAX_DIGITS and text.isascii() and text.isdigit() else None


def _to_float32(values: Any) -> Float32Array:
    """Values beyond float32's range become inf on purpose (`finite_rows` then names the row), so numpy's
    overflow warning would only be noise in the server log, once per such request."""
    with np.errstate(over="ignore"):
        return np.array(values, dtype=np.float32)


def finite_rows(array: Float32Array, what: str) -> Float32Array:
    """Refuse NaN and Infinity (also values beyond float32's range), naming the first such row."""
    if all_finite(array):
        return array
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)  # (N,)
    if not finite.all():
        row = int(np.argmin(finite))
        raise BadRequest(f"{what} row {row}: contains NaN or Infinity (or a value beyond float32's range)")
    return array


def _row_problem(row: Any, shape: tuple[int, ...], row_size: int) -> str:
    """Why `row` is not a valid row ('' when it is). A row is shaped like `shape`, or flat."""
    if not isinstance(row, list):
        return f"must be a list of numbers, got {type(row).__name__}"
    if row and not isinstance(row[0], list):
        if len(row) != row_size:
            return f"has {len(row)} values, expected {row_size} (shape {list(shape)})"
        return _elements_problem(row)
    if len(shape) == 1:
        return f"must be a flat list of {row_size} numbers"
    if len(row) != shape[0]:
        return f"has {len(row)} entries on its first axis, expected shape {list(shape)}"
    for part in row:
        problem = _row_problem(part, shape[1:], math.prod(shape[1:]))
        if problem:
            return problem
    return ""


def _elements_problem(values: list[Any]) -> str:
    if set(map(type, values)) <= _NUMBER_TYPES:
        return ""
    bad = next(value for value in values if type(value) not in _NUMBER_TYPES)
    return f"element {bad!r} is not a number"


def _batch_count(shape: tuple[int, ...], input_shape: tuple[int, ...], what: str) -> int:
    if len(shape) < 2 or shape[0] < 1 or any(n < 0 for n in shape):
        raise BadRequest(f"{what}: shape {list(shape)} must be [batch, ...] with batch >= 1")
    if math.prod(shape[1:]) != math.prod(input_shape):
        raise BadRequest(
            f"{what}: shape {list(shape)} does not match the model input [-1, {', '.join(map(str, input_shape))}]"
        )
    return shape[0]


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[1:]


def _shaped(
    array: Float32Array, shape: tuple[int, ...], rows: int, input_shape: tuple[int, ...], what: str
) -> Float32Array:
    if array.size != math.prod(shape):
        raise BadRequest(f"{what}: {array.size} values do not fill shape {list(shape)}")
    return finite_rows(array.reshape((rows, *input_shape)), what)
