"""Versions that arrive, break and go while the server runs: poll mode, explicit mode, the repository API.

Real servers over real repositories edited as an operator would (mkdir, cp, a garbage version, rm -rf).
Every wait is on a condition with a bounded deadline, never on a sleep; the poll interval is 0.1 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from bad_input_helpers import ROW
from checkpoints import write_checkpoint
from conftest import RunningServer, start_server, stop_server
from repository_helpers import entry, index, states, until_state, wait_for, write_garbage_version
from tritonclient.utils import InferenceServerException

from models.scan import NOT_A_VERSION
from service.lifecycle.registry import ModelRegistry
from service.observability.metrics import Metrics
from service.settings import Settings

POLL = ("--poll-interval-s", "0.1")


def predict(http: httpx.Client, path: str = "/v1/models/tiny:predict") -> httpx.Response:
    return http.post(path, json={"instances": [ROW]})


def served_version(http: httpx.Client) -> str:
    response = predict(http)
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


@pytest.fixture(scope="module")
def poll_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny/1 serves; tiny/2 is an empty directory (mkdir before the copy); `²` and `007` are not versions."""
    repository = tmp_path_factory.mktemp("poll-repository")
    write_checkpoint(repository, "tiny")
    for odd in ("2", "\u00b2", "007"):
        (repository / "tiny" / odd).mkdir()
    return repository


@pytest.fixture(scope="module")
def poll_server(poll_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(poll_repository, tmp_path_factory.mktemp("logs"), *POLL)
    yield running
    stop_server(running)


def test_an_empty_higher_version_and_odd_directories_leave_version_1_serving(
    poll_server: RunningServer, poll_repository: Path
) -> None:
    """Found today: an empty `2` took the model offline (503 on every unversioned request while ready said
    200); `²` failed start-up; `007` was registered as version 7 with a path that does not exist."""
    with poll_server.client() as http:
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert served_version(http) == "1"
        ready = http.get("/v2/models/tiny/ready")
        assert (ready.status_code, ready.json()) == (200, {"name": "tiny", "version": "1", "ready": True})
        assert [e for e in index(http) if e["name"] == "tiny"] == [
            {"name": "tiny", "version": "1", "state": "READY", "reason": ""},
            {
                "name": "tiny",
                "version": "2",
                "state": "UNAVAILABLE",
                "reason": "unreadable manifest manifest.json: No such file or directory",  # no server path
            },
            {"name": "tiny", "version": "007", "state": "UNAVAILABLE", "reason": NOT_A_VERSION},
            {"name": "tiny", "version": "\u00b2", "state": "UNAVAILABLE", "reason": NOT_A_VERSION},
        ]
        assert index(http, {"ready": True}) == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]
        for version in ("7", "007"):
            missing = predict(http, f"/v1/models/tiny/versions/{version}:predict")
            assert (missing.status_code, missing.json()) == (
                404,
                {"error": f"model 'tiny' has no version {version!r}; available: [1, 2]"},
            )
        refused = predict(http, "/v1/models/tiny/versions/2:predict")
        assert refused.status_code == 503
        assert refused.json()["error"].startswith("model 'tiny' version 2 is not served: unreadable manifest")


def test_poll_follows_repairs_new_versions_garbage_and_deletions(
    poll_server: RunningServer, poll_repository: Path, tmp_path: Path
) -> None:
    model_dir = poll_repository / "tiny"
    with poll_server.client() as http:
        # The operator moves a finished copy onto the empty `2` (one rename, so no poll can see half of it and
        # the load counts below are exact): its files changed, so it is retried and serves.
        source = write_checkpoint(tmp_path, "tiny", seed=1)
        shutil.copytree(source, tmp_path / "finished-copy")
        os.rename(tmp_path / "finished-copy", model_dir / "2")
        wait_for("version 2 to serve", until_state(http, "tiny", "2", "READY"))
        assert served_version(http) == "2"
        assert states(http, "tiny")["1"] == "READY"  # latest:2 keeps the one before for comparison
        self_test = http.get("/v2/models/tiny/versions/2").json()["parameters"]["self_test"]
        assert (self_test["passed"], self_test["failures"]) == (True, 0)
        assert self_test["cases"] > 0
        assert "INFO invariant.registry: model tiny version 2 ready (sha256 " in poll_server.log()

        # Garbage v3 (valid manifest, corrupt weights): refused with its reason, never answers, v2 serves.
        write_garbage_version(poll_repository, "tiny", model_dir / "2", 3)
        wait_for("version 3 to be refused", until_state(http, "tiny", "3", "UNAVAILABLE"))
        reason = entry(http, "tiny", "3")
        assert reason is not None
        assert re.fullmatch(
            r"checksum mismatch: model.safetensors has sha256 [0-9a-f]{64}, manifest says .*", reason["reason"]
        )
        assert served_version(http) == "2"
        assert http.get("/v2/health/ready").status_code == 200
        assert states(http, "tiny")["1"] == "READY"  # a refused version never displaces a serving one

        # v1's directory deleted: drained and unloaded; the server forgets it.
        shutil.rmtree(model_dir / "1")
        wait_for("version 1 to be unloaded", until_state(http, "tiny", "1", None))
        gone = predict(http, "/v1/models/tiny/versions/1:predict")
        assert (gone.status_code, gone.json()) == (404, {"error": "model 'tiny' has no version '1'; available: [2, 3]"})
        assert served_version(http) == "2"
        assert "INFO invariant.registry: model tiny version 1 unloaded" in poll_server.log()

        metrics = http.get("/metrics").text
        for line in (
            'invariant_model_state{model="tiny",state="READY",version="2"} 1.0',
            'invariant_model_state{model="tiny",state="UNAVAILABLE",version="3"} 1.0',
            'invariant_model_state{model="tiny",state="READY",version="1"} 0.0',
            'invariant_model_loads_total{model="tiny",result="refused"} 2.0',  # empty 2, garbage 3
            'invariant_model_loads_total{model="tiny",result="ready"} 2.0',  # 1 at start-up, repaired 2
            'invariant_model_unloads_total{model="tiny"} 1.0',
            'invariant_model_load_seconds_count{model="tiny"} 4.0',
        ):
            assert line in metrics, line
        assert "Traceback" not in poll_server.log()


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    repository = tmp_path_factory.mktemp("explicit-repository")
    write_checkpoint(repository, "tiny")
    write_garbage_version(repository, "broken", write_checkpoint(tmp_path_factory.mktemp("source"), "broken"), 1)
    running = start_server(repository, tmp_path_factory.mktemp("logs"), "--model-control", "explicit")
    yield running, repository
    stop_server(running)


def test_explicit_mode_changes_what_serves_only_through_the_api(
    explicit_server: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    server, repository = explicit_server
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    with server.client() as http:
        write_checkpoint(repository, "tiny", seed=1)  # v2 appears on disk; nothing loads it yet
        assert entry(http, "tiny", "2") == {
            "name": "tiny",
            "version": "2",
            "state": "UNAVAILABLE",
            "reason": "not loaded (model control explicit)",
        }
        assert served_version(http) == "1"

        client.load_model("tiny")  # answers once v2 serves
        assert served_version(http) == "2"
        listed = {(e["name"], e["version"]): e["state"] for e in client.get_model_repository_index()}
        assert listed == {("tiny", "1"): "READY", ("tiny", "2"): "READY", ("broken", "1"): "UNAVAILABLE"}

        client.unload_model("tiny")  # answers once both versions drained
        for path in ("/v1/models/tiny:predict", "/v1/models/tiny/versions/1:predict"):
            unloaded = predict(http, path)
            assert unloaded.status_code == 503
            version = "1" if "versions" in path else "2"
            assert unloaded.json() == {
                "error": f"model 'tiny' version {version} is not served: unloaded through the repository API"
            }
        assert states(http, "tiny") == {"1": "UNAVAILABLE", "2": "UNAVAILABLE"}

        reloaded = http.post("/v2/repository/models/tiny/load")
        assert (reloaded.status_code, reloaded.json()) == (200, {"name": "tiny", "versions": ["1", "2"]})
        assert served_version(http) == "2"

        with pytest.raises(InferenceServerException, match="model 'broken' does not serve: version 1: checksum"):
            client.load_model("broken")
        unknown = http.post("/v2/repository/models/nope/load")
        assert (unknown.status_code, unknown.json()) == (
            400,
            {"error": "model 'nope' has no version directory in the repository"},
        )
        unknown = http.post("/v2/repository/models/nope/unload")
        assert unknown.status_code == 400
        assert unknown.json() == {"error": "unknown model 'nope'; available: ['broken', 'tiny']"}
        assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def none_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    repository = tmp_path_factory.mktemp("none-repository")
    write_checkpoint(repository, "tiny")
    running = start_server(repository, tmp_path_factory.mktemp("logs"), "--model-control", "none")
    yield running, repository
    stop_server(running)


@pytest.mark.parametrize(
    ("server_fixture", "message"),
    [
        ("poll_server", "model control mode is 'poll': the server follows the repository on its own (every 0.1 s)"),
        ("none_server", "model control mode is 'none': models load at start-up only"),
    ],
)
def test_load_and_unload_are_refused_outside_explicit_mode(
    request: pytest.FixtureRequest, server_fixture: str, message: str
) -> None:
    fixture = request.getfixturevalue(server_fixture)
    server: RunningServer = fixture[0] if isinstance(fixture, tuple) else fixture
    with server.client() as http:
        for action in ("load", "unload"):
            refused = http.post(f"/v2/repository/models/tiny/{action}")
            assert refused.status_code == 400
            assert refused.json() == {"error": f"{message}; {action} needs --model-control explicit"}
        assert predict(http).status_code == 200


def test_the_index_answers_in_none_mode_and_shows_versions_it_will_not_load(
    none_server: tuple[RunningServer, Path],
) -> None:
    server, repository = none_server
    with server.client() as http:
        assert http.get("/v2").json()["extensions"] == [
            "binary_tensor_data",
            "model_repository",
            "model_repository_metadata",
        ]
        write_checkpoint(repository, "tiny", seed=1)
        assert index(http) == [
            {"name": "tiny", "version": "1", "state": "READY", "reason": ""},
            {"name": "tiny", "version": "2", "state": "UNAVAILABLE", "reason": "not loaded (model control none)"},
        ]
        assert index(http, {"ready": True}) == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]
        bad = http.post("/v2/repository/index", json={"ready": "yes"})
        assert (bad.status_code, bad.json()) == (400, {"error": "\"ready\" must be true or false, got 'yes'"})
        assert served_version(http) == "1"


def test_a_request_never_finds_a_copy_that_is_already_draining(tmp_path: Path) -> None:
    """In process, a request's own steps (look up, then submit) run in a loop while a reload swaps the
    serving copy: the old copy starts draining only after the new snapshot is published."""
    write_checkpoint(tmp_path, "tiny")
    registry = ModelRegistry(Settings(repository=tmp_path, model_control="explicit"), Metrics())
    row = np.zeros((1, 16), dtype=np.float32)

    async def scenario() -> tuple[int, bool]:
        await registry.start()
        try:
            before = registry.get_ready("tiny")
            reload = asyncio.create_task(registry.load("tiny"))
            answered = 0
            while not reload.done():
                await registry.get_ready("tiny").batcher.submit(row, 10)  # NotReady if it were draining
                answered += 1
            assert await reload == [1]
            return answered, registry.get_ready("tiny") is not before
        finally:
            await registry.close()

    answered, swapped = asyncio.run(scenario())
    assert swapped
    assert answered > 0
