"""Shared fixtures: tiny checkpoints and real servers (`python -m service` under uvicorn on a free port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (checkpoints.py) import by name
sys.path.insert(1, str(Path(__file__).parents[1] / "bench"))  # bench modules under test (variable_shape_executor.py)

from bad_input_helpers import Probe
from checkpoints import TINY_CNN, write_checkpoint
from gated_service import Gate

from models.labels import write_labels

ROOT = Path(__file__).resolve().parents[1]


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
) -> RunningServer:
    """Start `python -m service` as its own process group; waits for readiness (or liveness). With a gate,
    the same server through tests/gated_service.py: its CNNs' forward passes wait while the gate is closed.
    `env`: extra environment variables of the server process."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    launcher = [str(ROOT / "tests" / "gated_service.py"), str(gate.directory)] if gate else ["-m", "service"]
    command = [sys.executable, *launcher, "--repository", str(repository), "--port", str(port), *flags]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")} | (env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    _wait(server, "/v2/health/ready" if wait_ready else "/v2/health/live")
    return server


def _wait(server: RunningServer, path: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + path, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not answering 200 on {path} after {timeout_s} s:\n{server.log()}")


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
