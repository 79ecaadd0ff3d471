"""hypothesis against the gRPC decoder (service/grpc/codec.py), from the bytes a client sends to the rows the
batcher gets: ModelInferRequest messages near the valid region (names, datatypes, shapes, raw and typed
contents, both at once, several inputs, refused parameters, unknown outputs) and byte-level corruptions of
valid messages. Each either decodes to exactly the float32 rows the message carries (an oracle computed here
from the message with numpy), or is refused with a BadRequest: never another exception, never other rows.
Then the same kinds of messages over the wire to a real server: never INTERNAL or UNKNOWN, and every OK answer
bitwise the V2 HTTP binary answer for the oracle's rows. Fixed seed; `make fuzz` runs more examples."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from checkpoints import write_checkpoint
from conftest import RunningServer, start_server, stop_server
from grpc_helpers import call_bytes, code_of, grpc_outputs, http_binary_outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from models import InputSpec
from service.errors import BadRequest
from service.grpc.codec import parse_infer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6")) * 50
FIXED_SEED = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
WIRE_SEED = settings(
    max_examples=max(EXAMPLES // 6, 30),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
SPEC = InputSpec(shape=(4,), feature_names=("a", "b", "c", "d"))
FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents"}
RAW_DTYPES = {"FP32": "<f4", "FP64": "<f8"}

numbers = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([0.0, -0.0, 1e-45, 3.4e38, -3.4e38]),
)
shapes = st.one_of(
    st.tuples(st.integers(1, 5), st.just(4)),
    st.lists(st.integers(-2, 6), max_size=4).map(tuple),
    st.sampled_from([(2, 2, 2), (1, 4, 1), (2**40, 4), (0, 4), (3,)]),
)


@st.composite
def infer_requests(draw: st.DrawFn) -> Any:
    """A ModelInferRequest near the valid region for a model whose input is (4,)."""
    message = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["tiny", "tiny", "", "x" * 300])),
        model_version=draw(st.sampled_from(["", "", "1", "9" * 40])),
        id=draw(st.sampled_from(["", "r", "i" * 2000])),
    )
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
        shape = draw(shapes)
        datatype = draw(st.sampled_from(["FP32", "FP32", "FP64", "INT32", "INT64", "BYTES", "FP16", ""]))
        tensor = message.inputs.add(name=draw(st.sampled_from(["input", "input", "x"])), datatype=datatype)
        tensor.shape.extend(shape)
        count = max(0, math.prod(shape)) if math.prod(shape) < 64 else 8
        count = draw(st.sampled_from([count, count, count + 1, max(count - 1, 0)]))
        how = draw(st.sampled_from(["raw", "typed", "typed", "both", "wrong field", "none"]))
        if how in {"raw", "both"}:
            dtype = RAW_DTYPES.get(datatype, "<f4")
            values = draw(st.lists(numbers, min_size=count, max_size=count))
            raw = np.asarray(values, dtype=dtype).tobytes()
            message.raw_input_contents.append(raw[: len(raw) - draw(st.sampled_from([0, 0, 1]))])
        if how in {"typed", "both", "wrong field"}:
            field = FIELDS.get(datatype, "fp32_contents")
            if how == "wrong field":
                field = draw(st.sampled_from([*FIELDS.values(), "bool_contents", "bytes_contents"]))
            _fill(tensor.contents, field, count, draw)
        if draw(st.integers(0, 9)) == 0:
            tensor.parameters[draw(st.sampled_from(["shared_memory_region", "binary_data_size"]))].int64_param = 1
    for name in draw(st.lists(st.sampled_from(["logits", "label", "class_index", "embedding"]), max_size=3)):
        output = message.outputs.add(name=name)
        if draw(st.integers(0, 9)) == 0:
            output.parameters[draw(st.sampled_from(["classification", "binary_data"]))].int64_param = 2
    return message


@st.composite
def valid_requests(draw: st.DrawFn) -> Any:
    """A request the server answers: tiny, N x 4 finite rows as raw or typed FP32/FP64, some outputs."""
    count = draw(st.integers(1, 6))
    datatype = draw(st.sampled_from(["FP32", "FP64"]))
    values = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=4 * count, max_size=4 * count))
    message = pb.ModelInferRequest(model_name="tiny", model_version=draw(st.sampled_from(["", "1"])), id="v")
    tensor = message.inputs.add(name="input", datatype=datatype, shape=[count, 4])
    if draw(st.booleans()):
        message.raw_input_contents.append(np.asarray(values, dtype=RAW_DTYPES[datatype]).tobytes())
    else:
        getattr(tensor.contents, FIELDS[datatype]).extend(values)
    for name in draw(st.lists(st.sampled_from(["logits", "probabilities", "label"]), max_size=2)):
        message.outputs.add(name=name)
    return message


requests = st.one_of(valid_requests(), infer_requests())


def _fill(contents: Any, field: str, count: int, draw: st.DrawFn) -> None:
    if field in {"int_contents", "int64_contents"}:
        bound = 2**31 - 1 if field == "int_contents" else 2**63 - 1
        getattr(contents, field).extend(draw(st.lists(st.integers(-bound, bound), min_size=count, max_size=count)))
    elif field == "bool_contents":
        contents.bool_contents.extend([True] * count)
    elif field == "bytes_contents":
        contents.bytes_contents.extend([b"1"] * count)
    else:
        getattr(contents, field).extend(draw(st.lists(numbers, min_size=count, max_size=count)))


def oracle_rows(message: Any) -> np.ndarray[Any, Any]:
    """The float32 rows a valid request carries, computed from the message alone (numpy, not the codec)."""
    tensor = message.inputs[0]
    if message.raw_input_contents:
        values = np.frombuffer(message.raw_input_contents[0], dtype=RAW_DTYPES[tensor.datatype])
    else:
        values = np.asarray(list(getattr(tensor.contents, FIELDS[tensor.datatype])), dtype=np.float64)
    return values.astype(np.float32).reshape((tensor.shape[0], *SPEC.shape))


def decoded_or_refused(raw: bytes) -> np.ndarray[Any, Any] | None:
    """The rows the codec hands the batcher, or None when it refuses the request with a BadRequest."""
    try:
        parsed = parse_infer(raw)
        rows = parsed.request.rows.decode(SPEC)
    except BadRequest:
        return None
    message = pb.ModelInferRequest.FromString(raw)
    assert (parsed.request.model, parsed.request.version or "") == (message.model_name, message.model_version)
    assert parsed.id == message.id
    assert set(parsed.outputs) <= {"logits", "probabilities", "class_index", "label"}
    assert len(message.inputs) == 1
    return rows


@FIXED_SEED
@given(requests)
def test_the_decoder_gives_the_rows_sent_or_a_bad_request(message: Any) -> None:
    rows = decoded_or_refused(message.SerializeToString())
    if rows is not None:
        want = oracle_rows(message)
        assert rows.dtype == np.float32
        assert rows.shape == want.shape
        assert rows.tobytes() == want.tobytes()
        assert np.isfinite(rows).all()


@FIXED_SEED
@given(requests, st.data())
def test_corrupted_bytes_never_crash_the_decoder(message: Any, data: st.DataObject) -> None:
    raw = bytearray(message.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    rows = decoded_or_refused(bytes(raw))
    if rows is not None:
        assert rows.tobytes() == oracle_rows(pb.ModelInferRequest.FromString(bytes(raw))).tobytes()


# --- the same over the wire, to a real server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("fuzz-grpc")
    write_four_feature_model(repository)
    running = start_server(repository, tmp_path_factory.mktemp("logs"), grpc=True)
    yield running
    stop_server(running)


def write_four_feature_model(repository: Path) -> None:
    from models import MLPConfig

    write_checkpoint(repository, "tiny", MLPConfig(in_features=4, num_classes=3, hidden=(8,), norm="batch"))


ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.mark.slow
def test_malformed_messages_over_the_wire(wide_server: RunningServer) -> None:
    with grpc.insecure_channel(wide_server.grpc_target) as channel:
        seen: dict[grpc.StatusCode, int] = {}

        @WIRE_SEED
        @given(requests, st.booleans(), st.data())
        def one(message: Any, corrupt: bool, data: st.DataObject) -> None:
            raw = message.SerializeToString()
            if corrupt and raw:
                at = data.draw(st.integers(0, len(raw) - 1))
                raw = raw[:at] + bytes([raw[at] ^ 0x5A]) + raw[at + 1 :]
            try:
                answer = pb.ModelInferResponse.FromString(call_bytes(channel, "ModelInfer", raw))
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = code_of(error)
            seen[code] = seen.get(code, 0) + 1
            assert code in ALLOWED, code
            if code == grpc.StatusCode.OK:
                rows = oracle_rows(pb.ModelInferRequest.FromString(raw))
                http = http_binary_outputs(wide_server.url, "tiny", rows)
                assert all(http[name] == value for name, value in grpc_outputs(answer).items())

        one()
    assert seen.get(grpc.StatusCode.OK, 0) > 0
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0
    assert "Traceback" not in wide_server.log()
