"""Start-up against a hostile repository, through the real server process (issue 20 item 5): a FIFO
manifest is refused and the server still starts; a load that hangs is refused after --load-timeout-s; and
SIGTERM during a hung start-up stops the process instead of being ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from checkpoints import TINY_CNN, write_checkpoint
from conftest import ROOT, free_port, start_server, stop_server
from gated_service import Gate
from repository_helpers import entry
from waiting import wait_until


def test_a_fifo_manifest_at_start_up_refuses_that_version_and_the_server_serves(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_checkpoint(repository, "good")
    bad = write_checkpoint(repository, "fifo")
    (bad / "manifest.json").unlink()
    os.mkfifo(bad / "manifest.json")
    server = start_server(repository, tmp_path)  # waits for /v2/health/ready: it never listened before
    try:
        with server.client() as http:
            assert entry(http, "good", "1") == {"name": "good", "version": "1", "state": "READY", "reason": ""}
            refused = entry(http, "fifo", "1")
            assert refused is not None
            assert refused["state"] == "UNAVAILABLE"
            assert refused["reason"] == "unreadable manifest manifest.json: not a regular file (a FIFO)"
    finally:
        stop_server(server)


def _gated_server(repository: Path, tmp_path: Path, gate: Gate, port: int, *flags: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(ROOT / "tests" / "gated_service.py"), str(gate.directory)]
    command += ["--repository", str(repository), "--port", str(port), "--grpc-port", "0", *flags]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    with (tmp_path / "server.log").open("wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def test_sigterm_during_a_hung_start_up_stops_the_process(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_checkpoint(repository, "cnn", TINY_CNN)
    (tmp_path / "gate").mkdir()
    gate = Gate(tmp_path / "gate")
    gate.close()  # the start-up self-test's first forward waits here: a load that never finishes
    process = _gated_server(repository, tmp_path, gate, free_port())
    try:
        gate.wait_until_blocked(timeout_s=120)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)  # before: ignored until the gate opened (forever)
        assert returncode != 0
        assert "signal 15 during start-up" in (tmp_path / "server.log").read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        gate.open()


def test_a_load_that_hangs_is_refused_after_the_load_timeout_and_the_server_starts(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_checkpoint(repository, "cnn", TINY_CNN)
    (tmp_path / "gate").mkdir()
    gate = Gate(tmp_path / "gate")
    gate.close()
    port = free_port()
    process = _gated_server(repository, tmp_path, gate, port, "--load-timeout-s", "3")
    try:
        gate.wait_until_blocked(timeout_s=120)
        url = f"http://127.0.0.1:{port}"

        def live() -> bool:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return httpx.get(url + "/v2/health/live", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until("the server listening", live, 120, every_s=0.1)
        with httpx.Client(base_url=url, timeout=30) as http:
            refused = entry(http, "cnn", "1")
            assert refused is not None
            assert refused["state"] == "UNAVAILABLE"
            assert refused["reason"] == "load did not finish within --load-timeout-s 3 s"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # the hung load's thread does not keep the process alive
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        gate.open()
