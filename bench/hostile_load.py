"""Load pieces for the issue-11 benches: raw HTTP/1.1 keep-alive clients on asyncio, a server per code
checkout (this one, or an older commit's worktree, for before/after), and a small digits model each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from servers import HOST, MODEL, PYTHON, Server

TRAIN = ["--data", "digits", "--arch", "mlp", "--hidden", "256,256", "--norm", "batch", "--epochs", "3"]


def digits_repository(code: Path, results: Path) -> Path:
    """A digits MLP written by `code`'s own training command (each checkout reads its own format)."""
    repository = results / f"repository-{code.name}"
    if not (repository / MODEL).is_dir():
        command = [PYTHON, "-m", "training", *TRAIN, "--name", MODEL, "--repository", str(repository)]
        subprocess.run(
            command, cwd=code, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env()
        )
    return repository


def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("INVARIANT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, "PYTHONUNBUFFERED": "1"}


def server_for(code: Path, repository: Path, results: Path, *flags: str, workers: int = 1) -> Server:
    command = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--chunk-rows", "32"]
    command += ["--workers", str(workers), *flags]
    return Server(code.name, command, clean_env(), results / f"{code.name}.log", cwd=code, processes=workers)


def post(path: str, body: bytes, extra_headers: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{extra_headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Record:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connections refused (not accepted)
    dropped: int = 0  # requests written whose connection closed without an answer

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies_s.append(seconds)

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One response: (status, body, server closes). Bodies are read by Content-Length (what the server sends)."""
    status = int((await reader.readuntil(b"\r\n")).split()[1])
    length = 0
    close = False
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        if name.strip().lower() == "connection" and "close" in value.lower():
            close = True
    return status, await reader.readexactly(length), close


async def closed_loop(port: int, request: bytes, deadline: float, record: Record) -> None:
    """One keep-alive connection sending `request` back to back until `deadline`; reconnects if closed."""
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            record.errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            close = False
            while not close and time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                status, _, close = await read_answer(reader)
                record.add(status, time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            record.dropped += 1
        finally:
            writer.close()
