"""gRPC (Triton's inference.GRPCInferenceService) against a real server started through the CLI: tritonclient.grpc
health, metadata, inference with raw and typed contents, the repository with an admin key; every answer bitwise
equal to V2 HTTP binary for the same rows; the invariance probe over gRPC; the key matrix per RPC; errors as
status codes; metrics under protocol "grpc"; a KServe-proto client in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from checkpoints import TINY_CNN, write_checkpoint
from conftest import ROOT, RunningServer, start_server, stop_server, write_keys
from grpc_helpers import (
    ADMIN_KEY,
    API_KEY,
    OUTPUTS,
    call,
    call_bytes,
    code_of,
    grpc_outputs,
    http_binary_outputs,
    raw_infer_request,
)
from repository_helpers import write_garbage_version
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from service.guarantee.probe import FINITE_CO_ROW_KINDS, run_probe

pytestmark = pytest.mark.slow
CHUNK_ROWS = 4  # small C: the probe's batches around it stay short
ADMIN = [("authorization", f"Bearer {ADMIN_KEY}")]
CLIENT = [("authorization", f"Bearer {API_KEY}")]
SPARE = "spare"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`tiny` (MLP, 16 features), `tinycnn`, `spare` (for load/unload) and `broken` (v1 serves, v2 corrupt),
    with API and admin keys, explicit model control, C = 4, gRPC on."""
    repository = tmp_path_factory.mktemp("grpc-repository")
    write_checkpoint(repository, "tiny")
    write_checkpoint(repository, "tinycnn", TINY_CNN)
    write_checkpoint(repository, "spare", seed=3)
    first = write_checkpoint(repository, "broken", seed=4)
    write_garbage_version(repository, "broken", first, 2)
    keys = tmp_path_factory.mktemp("keys")
    write_keys((keys / "api"), API_KEY + "\n")
    write_keys((keys / "admin"), ADMIN_KEY + "\n")
    flags = ["--api-keys-file", str(keys / "api"), "--admin-keys-file", str(keys / "admin")]
    flags += ["--model-control", "explicit", "--chunk-rows", str(CHUNK_ROWS), "--version-policy", "all"]
    running = start_server(repository, tmp_path_factory.mktemp("logs"), *flags, grpc=True)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(served: RunningServer) -> Iterator[Any]:
    grpc_client = triton.InferenceServerClient(served.grpc_target)
    yield grpc_client
    grpc_client.close()


@pytest.fixture(scope="module")
def channel(served: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.grpc_target) as opened:
        yield opened


def rows_of(count: int, seed: int = 0, features: int = 16) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((count, features)).astype(np.float32) * 2


def test_health_and_metadata_through_tritonclient(client: Any) -> None:
    headers = dict(CLIENT)
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("tiny", headers=headers) is True
    assert client.is_model_ready("tiny", "1", headers=headers) is True
    assert client.is_model_ready("nope", headers=headers) is False
    assert client.is_model_ready("tiny", "9", headers=headers) is False
    assert client.is_model_ready("broken", "2", headers=headers) is False
    server = client.get_server_metadata(headers=headers, as_json=True)
    assert server["name"] == "invariant-serve"
    assert "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("tiny", headers=headers, as_json=True)
    assert metadata["name"] == "tiny"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "pytorch_invariant"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("logits", "FP32", ["-1", "4"]),
        ("probabilities", "FP32", ["-1", "4"]),
        ("class_index", "INT64", ["-1"]),
        ("label", "BYTES", ["-1"]),
    ]
    cnn = client.get_model_metadata("tinycnn", headers=headers, as_json=True)
    assert cnn["inputs"][0]["shape"] == ["-1", "1", "8", "8"]


def test_model_metadata_trailers_name_the_version_replica_and_fingerprint(
    served: RunningServer, channel: grpc.Channel
) -> None:
    stub = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelMetadata",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ModelMetadataResponse.FromString,
    )
    _, rpc = stub.with_call(pb.ModelMetadataRequest(name="tiny"), metadata=CLIENT)
    trailers = dict(rpc.trailing_metadata())
    http = httpx.get(f"{served.url}/v2/models/tiny", headers={"Authorization": f"Bearer {API_KEY}"})
    assert trailers["x-model-version"] == http.headers["X-Model-Version"] == "1"
    assert trailers["x-numerics-fingerprint"] == http.headers["X-Numerics-Fingerprint"]
    assert trailers["x-replica"] == http.headers["X-Replica"]
    assert trailers["x-model-sha256"] == http.headers["X-Model-Sha256"]


def test_raw_contents_are_bitwise_the_http_binary_answer(served: RunningServer, client: Any) -> None:
    rows = rows_of(37)  # more than one chunk of C = 4
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("tiny", [tensor], request_id="r-1", headers=dict(CLIENT))
    response = result.get_response()
    http = http_binary_outputs(served.url, "tiny", rows, API_KEY)
    assert grpc_outputs(response) == http
    assert [o.name for o in response.outputs] == list(OUTPUTS)
    assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "r-1")
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32
    assert logits.shape == (37, 4)
    assert logits.tobytes() == http["logits"]
    labels = [label.decode() for label in result.as_numpy("label").tolist()]
    assert labels == [f"class-{i}" for i in result.as_numpy("class_index").tolist()]
    parameters = {key: value.string_param for key, value in response.parameters.items()}
    headers = httpx.get(f"{served.url}/v2/models/tiny", headers={"Authorization": f"Bearer {API_KEY}"}).headers
    assert parameters == {
        "checkpoint_sha256": headers["X-Model-Sha256"],
        "numerics_fingerprint": headers["X-Numerics-Fingerprint"],
        "replica": headers["X-Replica"],
    }


def test_requested_outputs_come_in_the_order_asked(client: Any) -> None:
    rows = rows_of(3, seed=1)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    asked = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("logits")]
    result = client.infer("tiny", [tensor], outputs=asked, headers=dict(CLIENT))
    assert [o.name for o in result.get_response().outputs] == ["label", "logits"]


@pytest.mark.parametrize(
    ("datatype", "field", "cast"),
    [
        ("FP32", "fp32_contents", np.float32),
        ("FP64", "fp64_contents", np.float64),
        ("INT32", "int_contents", np.int32),
        ("INT64", "int64_contents", np.int64),
    ],
)
def test_typed_contents_give_the_answer_of_the_same_rows_as_raw_float32(
    served: RunningServer, channel: grpc.Channel, datatype: str, field: str, cast: Any
) -> None:
    values = (rows_of(5, seed=2) * 3).astype(cast)  # integer types: the rows rounded toward zero
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=[5, 16])
    getattr(tensor.contents, field).extend(values.ravel().tolist())
    response = call(channel, "ModelInfer", request, pb.ModelInferResponse, API_KEY)
    assert grpc_outputs(response) == http_binary_outputs(served.url, "tiny", values.astype(np.float32), API_KEY)


def test_the_probe_over_grpc_is_bitwise_the_probe_over_http(served: RunningServer, channel: grpc.Channel) -> None:
    """service/guarantee/probe.py's rows, every case through gRPC and through V2 HTTP binary: equal bits, and
    the probe row's answer the same at every position of every batch."""
    compared = 0

    def answers(rows: np.ndarray[Any, Any]) -> Sequence[bytes]:
        nonlocal compared
        response = call(channel, "ModelInfer", raw_infer_request("tiny", rows), pb.ModelInferResponse, API_KEY)
        outputs = grpc_outputs(response)
        assert outputs == http_binary_outputs(served.url, "tiny", rows, API_KEY)
        compared += 1
        logits = np.frombuffer(outputs["logits"], "<f4").reshape(len(rows), -1)
        probabilities = np.frombuffer(outputs["probabilities"], "<f4").reshape(len(rows), -1)
        classes = np.frombuffer(outputs["class_index"], "<i8")
        return [logits[i].tobytes() + probabilities[i].tobytes() + classes[i].tobytes() for i in range(len(rows))]

    report = run_probe(answers, (16,), CHUNK_ROWS, seed=5, kinds=FINITE_CO_ROW_KINDS)
    assert report.passed, report.summary()
    assert report.cases == 3 * (1 + 2 + 3 + 4 + 5 + 9)  # kinds x positions of batches 1, 2, 3, C, C+1, 2C+1
    assert compared == report.cases + 1


def test_repository_index_load_and_unload_with_an_admin_key(client: Any) -> None:
    admin = dict(ADMIN)
    index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
    listed = {(m["name"], m["version"]): m.get("state") for m in index}
    assert listed[("tiny", "1")] == "READY"
    assert listed[("spare", "1")] == "READY"
    assert listed[("broken", "2")] == "UNAVAILABLE"
    client.unload_model("spare", headers=admin)
    assert client.is_model_ready("spare", headers=admin) is False
    client.load_model("spare", headers=admin)
    assert client.is_model_ready("spare", headers=admin) is True
    with pytest.raises(InferenceServerException, match="load parameters are not supported"):
        client.load_model("spare", headers=admin, config='{"max_batch_size": 8}')


def requests_by_method() -> list[tuple[str, Any, Any]]:
    """(method, a valid request, its answer type): each method once, unload before load (spare ends loaded)."""
    rows = rows_of(2, seed=9)
    return [
        ("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse),
        ("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse),
        ("ModelReady", pb.ModelReadyRequest(name="tiny"), pb.ModelReadyResponse),
        ("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse),
        ("ModelMetadata", pb.ModelMetadataRequest(name="tiny"), pb.ModelMetadataResponse),
        ("ModelInfer", raw_infer_request("tiny", rows), pb.ModelInferResponse),
        ("RepositoryIndex", pb.RepositoryIndexRequest(), pb.RepositoryIndexResponse),
        (
            "RepositoryModelUnload",
            pb.RepositoryModelUnloadRequest(model_name="spare"),
            pb.RepositoryModelUnloadResponse,
        ),
        ("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="spare"), pb.RepositoryModelLoadResponse),
    ]


PUBLIC_METHODS = {"ServerLive", "ServerReady"}
ADMIN_METHODS = {"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}


@pytest.mark.parametrize("who", ["no key", "bad key", "API key", "admin key"])
def test_every_method_answers_by_its_access_level(channel: grpc.Channel, who: str) -> None:
    key = {"no key": None, "bad key": "not-a-key-0123456789abcdef", "API key": API_KEY, "admin key": ADMIN_KEY}[who]
    seen = {}
    for method, request, answer_type in requests_by_method():
        try:
            call(channel, method, request, answer_type, key)
            seen[method] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            seen[method] = code_of(error)
    ok, unauthenticated, denied = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    for method, code in seen.items():
        if method in PUBLIC_METHODS or who == "admin key":
            expected = ok
        elif who == "API key":
            expected = denied if method in ADMIN_METHODS else ok
        else:
            expected = unauthenticated
        assert code == expected, (who, method)
    assert len(seen) == 9


def test_key_refusals_say_why(channel: grpc.Channel) -> None:
    request = pb.RepositoryIndexRequest()
    with pytest.raises(grpc.RpcError) as missing:
        call(channel, "RepositoryIndex", request, pb.RepositoryIndexResponse)
    assert missing.value.details() == "missing API key: send the header Authorization: Bearer <key>"
    with pytest.raises(grpc.RpcError) as denied:
        call(channel, "RepositoryIndex", request, pb.RepositoryIndexResponse, API_KEY)
    assert denied.value.details() == "this route needs an admin key"


def infer_error(channel: grpc.Channel, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "ModelInfer", request, pb.ModelInferResponse, API_KEY)
    return code_of(caught.value), caught.value.details()


def test_errors_map_to_status_codes(channel: grpc.Channel) -> None:
    rows = rows_of(2)
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    assert infer_error(channel, raw_infer_request("tiny", rows[:, :15])) == (
        invalid,
        "input 'input': shape [2, 15] does not match the model input [-1, 16]",
    )
    assert infer_error(channel, raw_infer_request("nope", rows)) == (
        not_found,
        "unknown model 'nope'; available: ['broken', 'spare', 'tiny', 'tinycnn']",
    )
    assert infer_error(channel, raw_infer_request("tiny", rows, version="7"))[0] == not_found
    unavailable = infer_error(channel, raw_infer_request("broken", rows, version="2"))
    assert unavailable[0] == grpc.StatusCode.UNAVAILABLE
    assert unavailable[1].startswith("model 'broken' version 2 is not served: checksum mismatch")
    nan = rows.copy()
    nan[1, 3] = np.nan
    assert infer_error(channel, raw_infer_request("tiny", nan)) == (
        invalid,
        "input 'input' row 1: contains NaN or Infinity (or a value beyond float32's range)",
    )
    unknown_output = raw_infer_request("tiny", rows)
    unknown_output.outputs.add(name="embedding")
    assert infer_error(channel, unknown_output)[0] == invalid
    short = raw_infer_request("tiny", rows)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    assert infer_error(channel, short) == (
        invalid,
        "input 'input': 124 bytes of raw contents, expected 128 for shape [2, 16] of FP32",
    )


def test_malformed_bytes_are_invalid_argument_and_unserved_methods_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as malformed:
        call_bytes(channel, "ModelInfer", b"\x0a\xff\xff\xff", API_KEY)
    assert code_of(malformed.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.value.details().startswith("malformed ModelInferRequest")
    for method in ("ModelConfig", "ModelStatistics", "SystemSharedMemoryStatus", "TraceSetting"):
        with pytest.raises(grpc.RpcError) as unserved:
            call_bytes(channel, method, b"", ADMIN_KEY)
        assert code_of(unserved.value) == grpc.StatusCode.UNIMPLEMENTED, method


def test_a_message_over_max_body_bytes_is_refused(channel: grpc.Channel) -> None:
    big = rows_of(140_000)  # 8.96 MB of raw contents > 8 MiB (--max-body-bytes default)
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "ModelInfer", raw_infer_request("tiny", big), pb.ModelInferResponse, API_KEY)
    assert code_of(caught.value) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_inference_calls_are_counted_under_protocol_grpc(served: RunningServer, channel: grpc.Channel) -> None:
    def count(status: str) -> float:
        text = httpx.get(f"{served.url}/metrics").text
        line = f'invariant_requests_total{{model="tiny",protocol="grpc",status="{status}",version="1"}}'
        found = [row.split()[-1] for row in text.splitlines() if row.startswith(line)]
        return float(found[0]) if found else 0.0

    ok_before, bad_before = count("200"), count("400")
    call(channel, "ModelInfer", raw_infer_request("tiny", rows_of(1)), pb.ModelInferResponse, API_KEY)
    with pytest.raises(grpc.RpcError):
        call(channel, "ModelInfer", raw_infer_request("tiny", rows_of(1, features=15)), pb.ModelInferResponse, API_KEY)
    assert (count("200"), count("400")) == (ok_before + 1, bad_before + 1)


def test_a_kserve_proto_client_in_its_own_process(served: RunningServer) -> None:
    """KServe's grpc_predict_v2 messages (tests/kserve_grpc_client.py builds them in its own descriptor pool,
    in a separate process): health, metadata and ModelInfer answer as to Triton's messages, bitwise; KServe's
    RepositoryModelLoad (model_name in field 1) is refused, never misread."""
    rows = rows_of(3, seed=11)
    script = ROOT / "tests" / "kserve_grpc_client.py"
    done = subprocess.run(
        [sys.executable, str(script), served.grpc_target, API_KEY, ADMIN_KEY, json.dumps(rows.tolist())],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["live"] is True
    assert answer["ready"] is True
    assert answer["model_ready"] is True
    assert answer["metadata"] == {"name": "tiny", "versions": ["1"], "platform": "pytorch_invariant"}
    assert answer["outputs"] == ["logits", "probabilities", "class_index", "label"]
    http = http_binary_outputs(served.url, "tiny", rows, API_KEY)
    assert bytes.fromhex(answer["logits"]) == http["logits"]
    assert bytes.fromhex(answer["probabilities"]) == http["probabilities"]
    assert answer["load"][0] == "INVALID_ARGUMENT"
    assert "this server has one repository" in answer["load"][1]


def test_two_authorization_entries_are_invalid_argument(channel: grpc.Channel) -> None:
    """As HTTP answers 400 for two Authorization headers: which entry a proxy reads is not ours to guess."""
    stub = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelMetadata",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ModelMetadataResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub(pb.ModelMetadataRequest(name="tiny"), metadata=[*CLIENT, ("authorization", "Bearer other-key")])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "more than one Authorization header: send one"
