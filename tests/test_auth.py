"""API keys through the one route table: every route the app serves, asked without a key, with an API key and
with an admin key, on real servers with /metrics public and protected; curl and tritonclient with a key."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from bad_input_helpers import ROW
from conftest import RunningServer, start_server, stop_server, write_keys
from tritonclient.utils import InferenceServerException

from service.http.app import create_app
from service.http.auth import ADMIN, PUBLIC
from service.http.routes import Route
from service.settings import Settings

API_KEY = "client-key-0123456789abcdef"
ADMIN_KEY = "admin-key-fedcba9876543210"
CHALLENGE = 'Bearer realm="invariant-serve"'
MISSING = {"error": "missing API key: send the header Authorization: Bearer <key>"}
INVALID = {"error": "invalid API key"}
SAMPLE_PATH_VALUES = {"name": "tiny", "version": "1", "label": "stable"}
BODIES: dict[str | None, Any] = {
    None: None,
    "RepositoryIndexRequest": None,
    "RepositoryLoadRequest": None,
    "V1PredictRequest": {"instances": [ROW]},
    "V2InferRequest": {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]},
    # Well formed, signed by no key of the server: 200 with "mismatch", "bad_signature".
    "ReceiptVerifyRequest": {
        "receipt": {
            "format": "invariant-receipt/1",
            "model": "tiny",
            "version": "1",
            "checkpoint_sha256": "0" * 64,
            "fingerprint": "0" * 16,
            "numerics": {},
            "request_id": "r",
            "row": 0,
            "input_sha256": "0" * 64,
            "output_sha256": "0" * 64,
            "time": "2026-12-03T09:00:00.000000Z",
            "key_id": "0" * 16,
            "signature": "0" * 64,
        },
        "input": ROW,
    },
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    api, admin = folder / "api.keys", folder / "admin.keys"
    write_keys(api, f"# clients\n{API_KEY}\n\n")
    write_keys(admin, f"{ADMIN_KEY}  \n# operators\n")
    write_keys((folder / "receipt.keys"), "receipt-key-0123456789abcdef\n")  # so that receipts verify
    return api, admin


# Two servers: /metrics public (the default), and /metrics behind the admin keys.
SERVERS = {"metrics-public": False, "metrics-protected": True}


@pytest.fixture(scope="module", params=list(SERVERS))
def keyed(
    request: pytest.FixtureRequest,
    tiny_repository: Path,
    key_files: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, Settings]]:
    protect_metrics = SERVERS[request.param]
    settings = Settings(
        repository=tiny_repository,
        api_keys_file=key_files[0],
        admin_keys_file=key_files[1],
        protect_metrics=protect_metrics,
    )
    flags = ["--api-keys-file", str(key_files[0]), "--admin-keys-file", str(key_files[1])]
    flags += ["--model-control", "explicit"]  # so that an admin key can load and unload
    flags += ["--receipts-key-file", str(key_files[0].parent / "receipt.keys")]
    flags += ["--protect-metrics"] if protect_metrics else []
    server = start_server(tiny_repository, tmp_path_factory.mktemp("logs"), *flags)
    yield server, settings
    stop_server(server)
    log = server.log()
    assert API_KEY not in log
    assert ADMIN_KEY not in log


def served_routes(settings: Settings) -> list[Route]:
    """The app's own route table: the dispatcher's, the only router there is."""
    app = create_app(settings)
    assert app.dispatcher.routes == app.routes
    return list(app.routes)


def concrete(route: Route) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in route.path_values:
            return route.path_values[name][0]
        # The admin routes load and unload the CNN (reloaded after); every other test here uses `tiny`.
        return "tinycnn" if route.path.startswith("/v2/repository/") and name == "name" else SAMPLE_PATH_VALUES[name]

    return re.sub(r"{(\w+)}", value, route.path)


def call(server: RunningServer, route: Route, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = BODIES[route.doc.request]
    return httpx.request(route.method, server.url + concrete(route), json=body, headers=headers, timeout=30)


def expected_status(route: Route, key: str | None) -> int:
    if route.access == PUBLIC or key == ADMIN_KEY:
        return 200
    if key == API_KEY:
        return 403 if route.access == ADMIN else 200
    return 401


def test_every_route_answers_by_its_access_level(keyed: tuple[RunningServer, Settings]) -> None:
    server, settings = keyed
    routes = served_routes(settings)
    assert len(routes) >= 17
    seen: dict[str, list[int]] = {}
    for route in routes:
        for key in (None, "not-a-key-0123456789", API_KEY, ADMIN_KEY):
            response = call(server, route, key)
            want = expected_status(route, key if key != "not-a-key-0123456789" else None)
            assert response.status_code == want, (route.method, route.path, key, response.text)
            if want == 401:
                assert response.headers["WWW-Authenticate"] == CHALLENGE
                assert response.json() == (MISSING if key is None else INVALID)
            if want == 403:
                assert response.json() == {"error": "this route needs an admin key"}
            seen.setdefault(f"{route.method} {route.path} [{route.access}]", []).append(response.status_code)
    print(f"\n/metrics protected: {settings.protect_metrics}; none, bad key, API key, admin key")
    for line, statuses in seen.items():
        print(f"  {line}: {statuses}")
    assert [r.path for r in routes if r.access == ADMIN] == [
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
        *(["/metrics"] if settings.protect_metrics else []),
    ]
    reload = httpx.post(
        server.url + "/v2/repository/models/tinycnn/load", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert reload.json() == {"name": "tinycnn", "versions": ["1"]}


def test_an_api_key_cannot_load_or_unload_models_and_an_admin_key_can(keyed: tuple[RunningServer, Settings]) -> None:
    server, _ = keyed
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    api, admin = {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        refused_calls = [
            partial(client.unload_model, "tinycnn", headers=api),
            partial(client.load_model, "tinycnn", headers=api),
            partial(client.get_model_repository_index, headers=api),
        ]
        for refused_call in refused_calls:
            with pytest.raises(InferenceServerException) as refused:
                refused_call()
            assert refused.value.status() == "403"
            assert refused.value.message() == "this route needs an admin key"
        assert client.is_model_ready("tinycnn", headers=api)
        client.unload_model("tinycnn", headers=admin)
        assert not client.is_model_ready("tinycnn", headers=api)
        client.load_model("tinycnn", headers=admin)
        assert client.is_model_ready("tinycnn", headers=admin)  # an admin key also calls the inference routes
    finally:
        client.close()


def test_paths_no_route_serves_reveal_nothing_without_a_key(keyed: tuple[RunningServer, Settings]) -> None:
    server, _ = keyed
    for method, path, with_key in (("GET", "/nope", 404), ("POST", "/v2/health/live", 405), ("PUT", "/v2", 405)):
        anonymous = httpx.request(method, server.url + path)
        assert anonymous.status_code == 401
        assert anonymous.json() == MISSING
        keyed_answer = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {API_KEY}"})
        assert keyed_answer.status_code == with_key
        assert "error" in keyed_answer.json()


@pytest.mark.parametrize(
    "header",
    ["Basic " + API_KEY, "Bearer", f"Bearer {API_KEY} x", API_KEY, "bearer " + API_KEY[:-1], "Bearer " + API_KEY + "x"],
)
def test_malformed_authorization_headers_get_401(keyed: tuple[RunningServer, Settings], header: str) -> None:
    server, _ = keyed
    response = httpx.get(server.url + "/v1/models", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_scheme_is_case_insensitive(keyed: tuple[RunningServer, Settings]) -> None:
    server, _ = keyed
    response = httpx.get(server.url + "/v1/models", headers={"Authorization": f"bearer {API_KEY}"})
    assert response.status_code == 200


def test_curl_with_a_key(keyed: tuple[RunningServer, Settings]) -> None:
    server, _ = keyed
    url = server.url + "/v1/models/tiny:predict"
    body = '{"instances": [' + str(ROW) + "]}"
    command = ["curl", "-sS", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-d", body, url]
    without = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    assert without.stdout.splitlines()[-1] == "401"
    keyed_command = [*command[:-1], "-H", f"Authorization: Bearer {API_KEY}", url]
    with_key = subprocess.run(keyed_command, capture_output=True, text=True, check=True, timeout=30)
    assert with_key.stdout.splitlines()[-1] == "200"
    assert '"predictions"' in with_key.stdout


def test_tritonclient_with_a_key(keyed: tuple[RunningServer, Settings]) -> None:
    server, _ = keyed
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        assert client.is_server_live()  # health needs no key
        assert client.is_model_ready("tiny", headers=headers)
        rows = np.asarray([ROW, ROW], dtype=np.float32)
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer("tiny", [tensor], headers=headers)
        assert result.as_numpy("logits").shape == (2, 4)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("tiny", [tensor])
        assert refused.value.status() == "401"
        assert refused.value.message() == MISSING["error"]
    finally:
        client.close()


def test_two_authorization_headers_are_400_whichever_holds_the_key(keyed: tuple[RunningServer, Settings]) -> None:
    """Before: the first header won, so a proxy reading the last one could disagree with this server."""
    server, _ = keyed
    for pair in ((API_KEY, "not-a-key"), ("not-a-key", API_KEY), (API_KEY, API_KEY)):
        headers = [("Authorization", f"Bearer {key}") for key in pair]
        response = httpx.post(server.url + "/v1/models/tiny:predict", json={"instances": [ROW]}, headers=headers)
        assert response.status_code == 400
        assert response.json() == {"error": "more than one Authorization header: send one"}
    response = httpx.get(server.url + "/v2/health/live", headers=[("Authorization", "a"), ("Authorization", "b")])
    assert response.status_code == 200  # a public route reads no key
