"""Connections and processes that go wrong (issue 11, defects 3, 6 and 8): stalled headers and bodies are cut
off after --read-timeout-s, a stalled client does not hold a SIGTERM shutdown, a worker killed with -9
leaves no live gauges behind, workers exit when their parent is killed, and a process whose compute thread
died answers 503, drains and exits 70 so that its supervisor replaces it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from conftest import RunningServer, connect, read_until_closed, start_server, stop_server
from gated_service import Gate
from waiting import wait_until

from service.observability.metrics import workers_of

ROW = [0.25 * i - 2.0 for i in range(16)]


@pytest.fixture(scope="module")
def quick_timeouts(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tiny_repository, tmp_path_factory.mktemp("logs"), "--read-timeout-s", "1")
    yield running
    stop_server(running)


def test_slow_headers_are_cut_off_after_the_read_timeout(quick_timeouts: RunningServer) -> None:
    with connect(quick_timeouts) as sock:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n")  # and no more
        started = time.monotonic()
        assert read_until_closed(sock) == b""  # closed by the server, nothing to answer yet
        # Never before the 1 s read timeout; a server that never cut it off fails the socket's 10 s timeout
        # (no upper bound of ours: how late the cut comes depends on the machine's load, not on the rule).
        assert time.monotonic() - started > 0.9


def test_a_body_that_never_comes_gets_408_and_the_connection_closes(quick_timeouts: RunningServer) -> None:
    with connect(quick_timeouts) as sock:
        sock.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"instances": '
        )
        started = time.monotonic()
        answer = read_until_closed(sock)
        assert time.monotonic() - started > 0.9  # never before the read timeout (see above)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "request body not received within 1 s"}
    with httpx.Client(base_url=quick_timeouts.url) as http:
        assert http.post("/v1/models/tiny:predict", json={"instances": [ROW]}).status_code == 200
        metrics = http.get("/metrics").text
    assert re.search(r"^invariant_body_timeouts_total 1\.0$", metrics, re.MULTILINE)


REQUEST = (
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


def one_answer(sock: socket.socket) -> bytes:
    """Sends one predict request on `sock` and reads its whole answer (the connection stays open)."""
    body = json.dumps({"instances": [ROW]}).encode()
    sock.sendall(REQUEST % (len(body), body))
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
        part = sock.recv(65536)
        assert part, "the server closed the connection before answering"
        received += part
    return received


def _length(received: bytes) -> int:
    found = re.search(rb"content-length: (\d+)", received.partition(b"\r\n\r\n")[0], re.IGNORECASE)
    return int(found.group(1)) if found else 1 << 30


def test_a_busy_connection_outlives_the_deadlines_its_first_request_set(quick_timeouts: RunningServer) -> None:
    """Each answer moves the connection's read deadline on; the one timer set for the first deadline (1 s
    after connecting) must re-arm itself, not close a connection that has been answered since."""
    with connect(quick_timeouts) as sock:
        started = time.monotonic()
        answers = []
        while time.monotonic() - started < 2.5:  # 2.5 read timeouts, a request every 0.3 s
            answers.append(one_answer(sock).split(b" ", 2)[1])
            time.sleep(0.3)
    assert len(answers) >= 5
    assert set(answers) == {b"200"}


def test_after_an_answer_slow_headers_are_cut_off_at_the_read_timeout(quick_timeouts: RunningServer) -> None:
    with connect(quick_timeouts) as sock:
        assert one_answer(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n")  # and no more
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started > 0.9  # never before the read timeout (no upper bound: see above)


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_time(server: RunningServer) -> None:
    """Default flags: read timeout 10 s, uvicorn's keep-alive 5 s: an answered connection that sends
    nothing more is closed at the keep-alive time, before the read timeout would close it."""
    with connect(server, timeout_s=30) as sock:
        assert one_answer(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        idle_s = time.monotonic() - started
    assert 4.5 < idle_s < 9.5


def test_sigterm_finishes_promptly_with_a_stalled_client_connected(tiny_repository: Path, tmp_path: Path) -> None:
    server = start_server(tiny_repository, tmp_path, "--read-timeout-s", "2")
    try:
        with connect(server) as stalled:
            stalled.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
            started = time.monotonic()
            os.killpg(server.process.pid, signal.SIGTERM)
            # uvicorn re-raises the signal once its graceful shutdown is done
            assert server.process.wait(timeout=20) == -signal.SIGTERM
            stopped_s = time.monotonic() - started
            answer = read_until_closed(stalled)
    finally:
        stop_server(server)
    # Cut by the read timeout (2 s), not held until the drain timeout (35 s): the bound separates the two
    # with room for a loaded machine.
    assert stopped_s < 30
    assert answer.startswith(b"HTTP/1.1 408 ")  # a JSON 408, not uvicorn's plain-text 500
    assert "Traceback" not in server.log()


# ------------------------------------------------------------------------------------------ workers


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    wait_until(what, condition, timeout_s, every_s=0.1)


def test_killed_worker_leaves_no_live_gauges_and_workers_exit_with_their_parent(
    tiny_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    server = start_server(tiny_repository, tmp_path, "--workers", "2")
    try:
        wait_for(lambda: server.log().count("Application startup complete") >= 2, 60, "two workers start")
        workers = workers_of(server.process.pid)
        assert len(workers) == 2
        victim = min(workers)
        assert list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(workers_of(server.process.pid) - {victim}) == 2, 60, "a replacement worker")
        wait_for(lambda: server.log().count("Application startup complete") >= 3, 60, "the replacement serves")
        with httpx.Client(base_url=server.url) as http:
            for _ in range(4):  # any worker's scrape forgets the dead one
                assert http.get("/metrics").status_code == 200
        assert list(metrics_dir.glob(f"gauge_live*_{victim}.db")) == []

        workers = workers_of(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)  # the supervisor dies without a word to its workers
        server.process.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in workers), 30, "orphaned workers exit")
        port = urlparse(server.url).port
        with socket.socket() as sock:  # the port is free again: a restart would bind it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    finally:
        stop_server(server)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left, orphans included
            os.killpg(server.process.pid, signal.SIGKILL)


DIED = {"thread": "compute thread died", "loop": "compute failed on the event loop"}


@pytest.mark.parametrize("placement", list(DIED))
def test_a_dead_compute_thread_answers_503_then_the_process_exits_70(
    tiny_repository: Path, tmp_path: Path, placement: str
) -> None:
    (tmp_path / "gate").mkdir()
    gate = Gate(tmp_path / "gate")
    flags = ("--model-control", "none", "--placement", placement)
    server = start_server(tiny_repository, tmp_path, *flags, gate=gate)
    try:
        with server.client() as client:
            assert client.post("/v1/models/tiny:predict", json={"instances": [ROW]}).status_code == 200
            gate.inject_fault()  # the next chunk the compute thread takes kills it
            answer = client.post("/v1/models/tiny:predict", json={"instances": [ROW]})
        reason = f"{DIED[placement]}: RuntimeError: fault injected by the test"
        assert (answer.status_code, answer.json()) == (
            503, {"error": f"model 'tiny' version 1 is not served: {reason}"}
        )  # fmt: skip
        # It stops itself as a supervisor would (SIGTERM: drain, then exit) and exits 70 (EX_SOFTWARE), so that
        # docker's restart policy, systemd or uvicorn's worker supervisor start a fresh process.
        assert server.process.wait(timeout=60) == 70
        log = server.log()
        assert f"stopping the process so that its supervisor restarts it: model tiny version 1: {reason}" in log
        assert f"exiting with status 70 after: model tiny version 1: {reason}" in log
    finally:
        stop_server(server)
