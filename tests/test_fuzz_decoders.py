"""hypothesis against the request decoders, from the bytes a client sends to the rows the batcher gets:
V1 instances, V2 JSON tensors and the V2 binary tensor extension. Each generated body either decodes to
finite float32 rows of the model's input shape, or is refused with a BadRequest (400): nothing else.

Generation is near the valid region (right and wrong row lengths, shapes, datatypes, sizes, NaN, huge
numbers, wrong types) so that both outcomes occur. Fixed seed (derandomize); `make fuzz` runs more examples.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models import InputSpec
from service.errors import BadRequest
from service.protocols.v1 import parse_predict
from service.protocols.v2 import parse_infer
from service.protocols.wire import parse_json_object

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6")) * 50
FIXED_SEED = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
SHAPES = [(4,), (16,), (1, 2, 2), (2, 3)]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**39, 3.5e38, -3.5e38, 1e-45]),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=4))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
)


def rows_near(shape: tuple[int, ...]) -> st.SearchStrategy[Any]:
    """Rows with the right size, or one off, nested like the shape or flat, or objects keyed by feature names
    (all, one missing, one unknown), sometimes with a non-number."""
    size = math.prod(shape)
    names = feature_names(shape)
    objects = st.fixed_dictionaries(
        {name: numbers for name in names[1:]}, optional={names[0]: numbers | scalars, "extra": numbers}
    )
    flat = st.integers(max(size - 1, 0), size + 1).flatmap(
        lambda n: st.lists(numbers | scalars, min_size=n, max_size=n)
    )
    valid = st.lists(st.floats(-1e3, 1e3, width=32), min_size=size, max_size=size)
    nested = valid.map(lambda values: np.asarray(values, dtype=np.float32).reshape(shape).tolist())
    return st.one_of(valid, nested, flat, objects, json_values)


def feature_names(shape: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"feature_{i}" for i in range(math.prod(shape)))


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN/Infinity literals too, as careless clients send


def assert_rows(rows: Any, shape: tuple[int, ...]) -> None:
    assert isinstance(rows, np.ndarray)
    assert rows.dtype == np.float32
    assert rows.shape[1:] == shape
    assert rows.shape[0] >= 1
    assert np.isfinite(rows).all()


def decodes_or_gets_400(decode: Callable[[], Any], shape: tuple[int, ...], count: int) -> None:
    """decode() either raises BadRequest (a 400) or returns `count` finite float32 rows of `shape`."""
    try:
        rows = decode()
    except BadRequest:
        event("400")
        return
    event("decoded")
    assert_rows(rows, shape)
    assert rows.shape[0] == count


@FIXED_SEED
@given(data=st.data(), shape=st.sampled_from(SHAPES))
def test_v1_instances_decode_or_get_400(data: st.DataObject, shape: tuple[int, ...]) -> None:
    instances = data.draw(st.lists(rows_near(shape), max_size=4) | json_values)
    body = data.draw(st.sampled_from([{"instances": instances}, {"rows": instances}, instances]))
    spec = InputSpec(shape, feature_names=feature_names(shape))
    count = len(instances) if isinstance(instances, list) else -1  # only a list of instances may decode
    decodes_or_gets_400(lambda: parse_predict(json_bytes(body), "m", None).rows.decode(spec), shape, count)


def v2_tensor(shape: tuple[int, ...], count: int) -> st.SearchStrategy[dict[str, Any]]:
    """One input tensor of `count` rows: right or wrong name, datatype, declared shape and data."""
    size = math.prod(shape)
    rows = st.lists(rows_near(shape), min_size=count, max_size=count)
    flat_rows = st.lists(st.floats(-1e3, 1e3, width=32), min_size=count * size, max_size=count * size)
    integers = st.lists(st.integers(-(2**64), 2**64), min_size=count * size, max_size=count * size)
    return st.fixed_dictionaries(
        {
            "name": st.sampled_from(["input", "input", "input", "x"]),
            "datatype": st.sampled_from(["FP32", "FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES", "fp32", ""]),
            "shape": st.sampled_from([[count, size], [count, *shape]]) | st.lists(st.integers(-2, 2**40), max_size=4),
        },
        optional={"data": rows | flat_rows | integers | json_values, "parameters": json_values},
    )


@FIXED_SEED
@given(data=st.data(), shape=st.sampled_from(SHAPES), count=st.integers(1, 3))
def test_v2_json_tensors_decode_or_get_400(data: st.DataObject, shape: tuple[int, ...], count: int) -> None:
    tensor = data.draw(v2_tensor(shape, count))
    body: dict[str, Any] = {"inputs": data.draw(st.sampled_from([[tensor], [tensor], [tensor, tensor], tensor, []]))}
    extras: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
        {}, optional={"outputs": json_values, "parameters": json_values}
    )
    body |= data.draw(extras)

    def decode() -> Any:  # the whole request parses (outputs and id included) before the rows decode
        return parse_infer(json_bytes(body), None, "m", None).request.rows.decode(InputSpec(shape))

    decodes_or_gets_400(decode, shape, count)


@FIXED_SEED
@given(data=st.data(), shape=st.sampled_from(SHAPES))
def test_v2_binary_tensors_decode_or_get_400(data: st.DataObject, shape: tuple[int, ...]) -> None:
    count = data.draw(st.integers(1, 3))
    datatype = data.draw(st.sampled_from(["FP32", "FP64", "INT32", "BYTES"]))
    values = data.draw(
        st.lists(st.floats(width=32), min_size=count * math.prod(shape), max_size=count * math.prod(shape))
    )
    fmt = "<" + ("d" if datatype == "FP64" else "f") * len(values)
    binary = data.draw(st.sampled_from([struct.pack(fmt, *values), b""]) | st.binary(max_size=80))
    claimed = data.draw(st.sampled_from([len(binary), len(binary) + 1, -1, "4", None]) | st.integers(0, 100))
    tensor: dict[str, Any] = {"name": "input", "datatype": datatype, "shape": [count, *shape]}
    if claimed is not None:
        tensor["parameters"] = {"binary_data_size": claimed}
    header = json_bytes({"inputs": [tensor]})
    declared = data.draw(st.sampled_from([str(len(header)), str(len(header) + 3), "0", "-1", "x", "²", None]))

    def decode() -> Any:
        return parse_infer(header + binary, declared, "m", None).request.rows.decode(InputSpec(shape))

    decodes_or_gets_400(decode, shape, count)


@FIXED_SEED
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode) | json_values.map(json_bytes))
def test_arbitrary_bytes_parse_to_an_object_or_get_400(raw: bytes) -> None:
    try:
        body = parse_json_object(raw)
    except BadRequest:
        event("400")
        return
    event("decoded")
    assert isinstance(body, dict)
