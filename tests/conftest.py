"""Shared fixtures: tiny checkpoints and real servers (`python -m service` under uvicorn on a free port)."""

from __future__ import annotations

import functools
import inspect
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (checkpoints.py) import by name
sys.path.insert(1, str(Path(__file__).parents[1] / "examples"))  # the examples' scripts (tabular_mlp.py)

from bad_input_helpers import Probe
from checkpoints import TINY_CNN, write_checkpoint
from gated_service import Gate
from waiting import wait_until

from models.labels import write_labels

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a server or another process (a training run, a CLI), in its body or through any
    fixture it uses, is slow, marked or not: the fast lane runs in-process tests only."""
    for item in items:
        function = getattr(item, "function", None)
        fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        sources = [function] if function is not None else []
        sources += [definition.func for definitions in fixtures.values() for definition in definitions]
        if item.path.stem in TRAINING_MODULES or any(_starts_a_server(source) for source in sources):
            item.add_marker(pytest.mark.slow)


# Modules whose tests run whole (tiny) training jobs: seconds each, so they belong to `make test` only.
TRAINING_MODULES = {
    "test_training_cli",
    "test_training_defects",
    "test_distributed",
    "test_study",
    "test_training_report",
}
SLOW_CALLS = ("start_server(", "subprocess.", "run_training(", "getfixturevalue(")


@functools.cache
def _starts_a_server(function: Any) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # a builtin or C fixture: pytest's own
        return False
    if source.lstrip().startswith("def start_server("):
        return False
    return any(call in source for call in SLOW_CALLS)


def write_keys(path: Path, text: str) -> Path:
    """A key file as the server accepts one (service/keyfile.py): a regular file, mode 0600."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def connect(server: RunningServer, timeout_s: float = 10.0) -> socket.socket:
    """A raw TCP connection to the server, for what httpx will not send."""
    url = urlparse(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=timeout_s)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while part := sock.recv(65536):
        received += part
    return received


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    grpc_port: int = 0  # 0: gRPC off (start_server(..., grpc=True) turns it on)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    repository: Path,
    log_dir: Path,
    *flags: str,
    wait_ready: bool = True,
    gate: Gate | None = None,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    grpc: bool = False,
) -> RunningServer:
    """Start `python -m service` as its own process group; waits for readiness (or liveness). With a gate,
    the same server through tests/gated_service.py: its CNNs' forward passes wait while the gate is closed.
    `env`: extra environment variables of the server process; `preexec_fn`: run in it before the server
    starts (a resource limit). gRPC is off unless `grpc` (then on a free port): servers of parallel tests
    must not contend for the default port."""
    if os.environ.get("TEST_LANE") == "fast":  # `make test-fast`: no subprocess servers, by construction
        pytest.fail("this test starts a server: mark it @pytest.mark.slow (make test-fast runs none)")
    port = free_port()
    grpc_port = free_port() if grpc else 0
    log_path = log_dir / f"server-{port}.log"
    launcher = [str(ROOT / "tests" / "gated_service.py"), str(gate.directory)] if gate else ["-m", "service"]
    command = [sys.executable, *launcher, "--repository", str(repository), "--port", str(port), *flags]
    command += ["--grpc-port", str(grpc_port)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")} | (env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=preexec_fn,  # noqa: PLW1509 (a resource limit: setrlimit is safe between fork and exec)
        )  # fmt: skip
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path, grpc_port)
    _wait(server, "/v2/health/ready" if wait_ready else "/v2/health/live")
    return server


def _wait(server: RunningServer, path: str, timeout_s: float = 90.0) -> None:
    def answers() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            return httpx.get(server.url + path, timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(f"the server answering 200 on {path}", answers, timeout_s, every_s=0.1)
    except AssertionError:
        stop_server(server)
        raise RuntimeError(f"server not answering 200 on {path} after {timeout_s} s:\n{server.log()}") from None


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny` (16 features, 4 classes, BatchNorm MLP; labels.json {"stable": 1}, so the label routes answer)
    and `tinycnn` (1x8x8, 3 classes, BatchNorm CNN)."""
    repository = tmp_path_factory.mktemp("repository")
    write_checkpoint(repository, "tiny")
    write_labels(repository / "tiny", {"stable": 1})
    write_checkpoint(repository, "tinycnn", TINY_CNN)
    return repository


@pytest.fixture(scope="session")
def server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server with default settings over the tiny repository, shared by every test that needs no other."""
    running = start_server(tiny_repository, tmp_path_factory.mktemp("logs"))
    yield running
    stop_server(running)


@pytest.fixture
def probe(server: RunningServer) -> Iterator[Probe]:
    """A client of the shared server that, after the test, checks the server still serves cleanly."""
    with server.client() as http:
        checked = Probe(server, http, server.log_path.stat().st_size)
        yield checked
        checked.expect_serving()


def pair_of(server: RunningServer, name: str, small_chunk_rows: int | None) -> bool:
    """Whether model `name` serves the shape pair (C_small = 8); when not, the log gives the host's reason."""
    assert small_chunk_rows in (8, None)
    if small_chunk_rows is None:
        assert f"model {name} version 1: shape pair C = 8 and C = 32 differ on this host" in server.log()
    return small_chunk_rows == 8
