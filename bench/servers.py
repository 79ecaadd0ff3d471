"""Server processes for the benchmark: each in its own process group on a free port, readiness, RSS and CPU."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent
MODEL = "digits"
READY_TIMEOUT_S = 180.0
READY_STREAK = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# -------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path = ROOT  # `python -m service` runs the service/ found here
    processes: int = 1  # worker processes
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def launch(self) -> None:
        """Start in a new process group (so that stop() reaches the workers too) on a free port."""
        self.port = free_port()
        with self.log.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [*self.command, "--port", str(self.port)],
                # gRPC off unless a command asks for it (flags win): servers run side by side here.
                cwd=self.cwd, env={"INVARIANT_GRPC_PORT": "0", **self.env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self._log_tail()}")
            # Every worker has started (uvicorn logs this once per process), and then readiness holds on
            # many fresh connections in a row: one worker's "ready" says nothing about another's (ours load
            # models after start-up), and a request to a loading worker would count as an error.
            started = self.log.read_text(errors="replace").count("Application startup complete")
            if started >= self.processes and all(self._ready() for _ in range(READY_STREAK)):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {READY_TIMEOUT_S:g} s:\n{self._log_tail()}")

    def _ready(self) -> bool:
        time.sleep(0.02)
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as answer,
        ):
            return answer.status == 200
        return False

    def stop(self) -> None:
        """SIGTERM to the whole process group (uvicorn supervisor and workers), SIGKILL if it lingers."""
        process = self.process
        if process is None:
            return
        self.process = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        # Workers may outlive the supervisor briefly; make sure nothing of the group stays.
        for pid in _group_pids(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def rss_mb(self) -> tuple[float, float]:
        """(sum over the server's processes, largest worker process) resident memory in MB."""
        assert self.process is not None
        pids = _group_pids(self.process.pid)
        rss = {pid: _rss_bytes(pid) for pid in pids}
        workers = [pid for pid in pids if pid != self.process.pid and "resource_tracker" not in _cmdline(pid)]
        per_worker = max((rss[pid] for pid in workers), default=rss.get(self.process.pid, 0))
        return sum(rss.values()) / 2**20, per_worker / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's processes."""
        assert self.process is not None
        return sum(_cpu_ticks(pid) for pid in _group_pids(self.process.pid)) / os.sysconf("SC_CLK_TCK")

    def post(self, body: bytes) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}/v1/models/{MODEL}:predict", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def _log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if int(fields[2]) == pgid:  # fields: state ppid pgrp ...
                pids.append(int(entry.name))
    return pids


def _rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """All servers up at once (idle ones cost nothing), so that their runs can be interleaved."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


# ------------------------------------------------------------------------------------------------ wrk
