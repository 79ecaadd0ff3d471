"""The numerics fingerprint: in the V2 metadata with its parts and in the X-Numerics-Fingerprint header of
every prediction; --expect-fingerprint makes a replica with other numerics not ready, with the reason;
--portable-numerics pins the levers (they show in the parts) and the self-test still passes."""

from __future__ import annotations

from pathlib import Path

from conftest import RunningServer, start_server, stop_server

from service.engine.numerics import fingerprint_of
from service.engine.numerics_env import PORTABLE_ENVIRONMENT


def metadata_parameters(server: RunningServer, name: str = "tiny") -> dict[str, object]:
    with server.client() as client:
        response = client.get(f"/v2/models/{name}")
        assert response.status_code == 200, response.text
        parameters: dict[str, object] = response.json()["parameters"]
        return parameters


def test_fingerprint_is_in_metadata_with_its_parts_and_on_every_prediction(server: RunningServer) -> None:
    parameters = metadata_parameters(server)
    fingerprint, parts = parameters["numerics_fingerprint"], parameters["numerics"]
    assert isinstance(parts, dict)
    assert fingerprint == fingerprint_of(parts)  # the hash of exactly the published parts
    assert len(str(fingerprint)) == 16
    assert {"torch", "torch_build", "blas", "onednn", "cpu_capability", "threads", "chunk_rows", "dtype"} <= set(parts)
    assert (parts["threads"], parts["chunk_rows"], parts["dtype"], parts["device"]) == (1, 32, "float32", "cpu")
    assert parts["executor"] == "traced-cpu"
    assert "cpu_model" in parts  # MKL and oneDNN are not capped here, so the CPU model decides bits too
    with server.client() as client:
        v1 = client.post("/v1/models/tiny:predict", json={"instances": [[0.5] * 16]})
        v2 = client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]},
        )
    for response in (v1, v2):
        assert response.status_code == 200, response.text
        assert response.headers["X-Numerics-Fingerprint"] == fingerprint
        assert response.headers["X-Replica"]  # the host name by default
    # The CNN runs with the same C, dtype and libraries, channels-last: one part more, another fingerprint.
    # The shape pair is part of the shape where the self-test proved it for that model on this host.
    cnn = metadata_parameters(server, "tinycnn")
    cnn_parts = cnn["numerics"]
    assert isinstance(cnn_parts, dict)
    for model_parts, model in ((parts, parameters), (cnn_parts, cnn)):
        assert model_parts.get("small_chunk_rows") == model["small_chunk_rows"]
    unpaired = {key: value for key, value in parts.items() if key != "small_chunk_rows"}
    assert {key: value for key, value in cnn_parts.items() if key != "small_chunk_rows"} == {
        **unpaired,
        "memory_format": "channels_last",
    }
    assert cnn["numerics_fingerprint"] == fingerprint_of(cnn_parts) != fingerprint


def test_expected_fingerprint_keeps_a_matching_replica_ready_and_names_it(
    server: RunningServer, tiny_repository: Path, tmp_path: Path
) -> None:
    fingerprint = str(metadata_parameters(server)["numerics_fingerprint"])
    replica = start_server(
        tiny_repository, tmp_path, "--expect-fingerprint", f"0000000000000000,{fingerprint}", "--replica-name", "r7"
    )
    try:
        with replica.client() as client:
            response = client.post("/v1/models/tiny:predict", json={"instances": [[0.5] * 16]})
        assert response.status_code == 200, response.text
        assert response.headers["X-Numerics-Fingerprint"] == fingerprint
        assert response.headers["X-Replica"] == "r7"
    finally:
        stop_server(replica)


def test_portable_numerics_pin_the_levers_and_a_mismatch_is_not_ready_with_the_reason(
    server: RunningServer, tiny_repository: Path, tmp_path: Path
) -> None:
    plain = str(metadata_parameters(server)["numerics_fingerprint"])
    portable = start_server(
        tiny_repository, tmp_path, "--portable-numerics", "--expect-fingerprint", plain, wait_ready=False
    )
    try:
        with portable.client() as client:
            ready = client.get("/v2/health/ready")
            model_ready = client.get("/v2/models/tiny/ready")
            predict = client.post("/v1/models/tiny:predict", json={"instances": [[0.5] * 16]})
            index = client.post("/v2/repository/index", json={}).json()
    finally:
        stop_server(portable)
    assert ready.status_code == 503
    assert model_ready.status_code == 503
    assert predict.status_code == 503
    reason = model_ready.json()["error"]
    # Refused by the fingerprint check, which runs after the self-test: the self-test passed with the levers
    # pinned. The reason names both fingerprints and the parts, where the pinned levers show.
    assert reason.startswith("model 'tiny' is not ready: numerics fingerprint ")
    assert f"is not the expected {plain}: this replica would compute different bits" in reason
    assert "'cpu_capability': 'DEFAULT'" in reason
    for name, value in PORTABLE_ENVIRONMENT.items():
        assert f"'{name}': '{value}'" in reason
    assert "cpu_model" not in reason  # MKL and oneDNN are capped: the CPU model no longer decides
    assert {"name": "tiny", "version": "1", "state": "UNAVAILABLE", "reason": reason.split(": ", 1)[1]} in index
