"""A closed-loop HTTP/1.1 load generator with no dependencies, for machines without wrk (the GPU check).

N keep-alive connections each POST the same body in a loop for a fixed time; counts answers by status and
records each request's latency. Answers are read by Content-Length (what uvicorn sends for JSON).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    connections: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connection-level failures

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def requests_per_second(self) -> float:
        return self.ok / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


def run_load(url: str, body: bytes, connections: int, seconds: float) -> LoadResult:
    """POST `body` to `url` from `connections` connections for `seconds`."""
    return asyncio.run(_run(url, body, connections, seconds))


async def run_request_load(host: str, port: int, request: bytes, connections: int, seconds: float) -> LoadResult:
    """Send the whole HTTP/1.1 `request` (head and body, any headers) from `connections` keep-alive connections
    for `seconds`, on the running event loop."""
    result = LoadResult(connections, seconds)
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_connection(host, port, request, deadline, result) for _ in range(connections)))
    return result


async def _run(url: str, body: bytes, connections: int, seconds: float) -> LoadResult:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    result = LoadResult(connections, seconds)
    deadline = time.perf_counter() + seconds
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await asyncio.gather(*(_connection(host, port, head + body, deadline, result) for _ in range(connections)))
    return result


async def _connection(host: str, port: int, request: bytes, deadline: float, result: LoadResult) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        result.errors += 1
        return
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status = await _read_answer(reader)
            result.latencies_s.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        result.errors += 1
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """Reads one response; returns its status code."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status
