"""Issue 11's fault figures, on this checkout with --workers 2 and 16 closed-loop clients (8-row requests):

    python bench/faults.py

1. SIGKILL of one worker under load: failed requests, seconds until the replacement worker serves, and the
   metrics afterwards (queue gauge back to 0, no files of the dead worker).
2. SIGTERM to the server under load, with one client stalled mid-body: answers, requests lost after being
   accepted, seconds until the process exits (drain timeout: request timeout + 5 s = 35 s).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hostile_load import Record, closed_loop, digits_repository, post
from servers import HOST, MODEL, PYTHON, ROOT, Server, running

from service.observability.metrics import workers_of

CLIENTS = 16


def server_workers(server: Server) -> set[int]:
    assert server.process is not None
    return workers_of(server.process.pid)


def startups(server: Server) -> int:
    return server.log.read_text(errors="replace").count("Application startup complete")


async def load_with(
    server: Server, seconds: float, fault_at: float, fault: Callable[[], Awaitable[float]]
) -> tuple[Record, float]:
    """16 clients for `seconds`; `fault()` (a coroutine function) runs at `fault_at`; returns its result."""
    from sklearn.datasets import load_digits

    rows = load_digits().data[:8].astype(int).tolist()
    request = post(f"/v1/models/{MODEL}:predict", f'{{"instances": {rows}}}'.encode())
    record = Record()
    deadline = time.perf_counter() + seconds

    async def run_fault() -> float:
        await asyncio.sleep(fault_at)
        return await fault()

    fault_task = asyncio.create_task(run_fault())
    await asyncio.gather(*(closed_loop(server.port, request, deadline, record) for _ in range(CLIENTS)))
    return record, await fault_task


def sigkill_one_worker(server: Server, metrics_dir: Path) -> None:
    victim = min(server_workers(server))

    async def kill() -> float:
        before = startups(server)
        killed = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        while startups(server) <= before:  # the replacement accepts connections once it logs this
            await asyncio.sleep(0.05)
        return time.perf_counter() - killed

    record, replaced_s = asyncio.run(load_with(server, 30, 5, kill))
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    queue = re.findall(r"^invariant_queue_rows\{[^}]*\} (\S+)$", text, re.MULTILINE)
    ready = re.findall(r"^invariant_model_ready\{[^}]*\} (\S+)$", text, re.MULTILINE)
    left = sorted(p.name for p in metrics_dir.glob(f"gauge_live*_{victim}.db"))
    print("\nSIGKILL of one worker of --workers 2 under 16-client load (30 s, kill at 5 s)")
    print(
        f"  answers: {dict(sorted(record.statuses.items()))}; connections refused: {record.errors}; "
        f"requests dropped without an answer: {record.dropped}"
    )
    print(f"  replacement worker accepting connections {replaced_s:.2f} s after the kill")
    print(f"  after: invariant_queue_rows {queue}, invariant_model_ready {ready}, files of the dead worker: {left}")


def server_counted(metrics_dir: Path) -> dict[str, float]:
    """invariant_requests_total by status, summed over the (now exited) workers' multiprocess files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(metrics_dir))  # type: ignore[no-untyped-call]
    counted: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "invariant_requests_total":
                status = sample.labels["status"]
                counted[status] = counted.get(status, 0) + sample.value
    return counted


def sigterm_under_load(server: Server, metrics_dir: Path) -> None:
    assert server.process is not None
    process = server.process
    stalled = socket.create_connection((HOST, server.port))
    stalled.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")

    async def terminate() -> float:
        sent = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        while process.poll() is None:
            await asyncio.sleep(0.05)
        return time.perf_counter() - sent

    record, exit_s = asyncio.run(load_with(server, 60, 5, terminate))
    stalled.settimeout(5)
    stalled_answer = stalled.recv(200).split(b"\r\n", 1)[0]
    print("\nSIGTERM to the server (--workers 2) under 16-client load, one client stalled mid-body")
    print(
        f"  answers: {dict(sorted(record.statuses.items()))}; connections refused after the signal: "
        f"{record.errors}; written on a connection the server closed, no answer: {record.dropped}"
    )
    print(
        f"  process exited {exit_s:.2f} s after SIGTERM (exit status {process.returncode}); "
        f"the stalled client got: {stalled_answer.decode()!r}"
    )
    # The requests the server took in are the ones it counted; each must have reached its client.
    counted = server_counted(metrics_dir)
    received = sum(record.statuses.values())
    print(
        f"  server counted {dict(sorted(counted.items()))}; clients received {received} answers "
        f"-> accepted but lost: {sum(counted.values()) - received:g}"
    )


def main() -> None:
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    repository = digits_repository(ROOT, results)
    print(f"load average at start: {os.getloadavg()}")
    for scenario in ("sigkill", "sigterm"):
        metrics_dir = Path(tempfile.mkdtemp(prefix="faults-metrics-"))
        command = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--workers", "2"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        server = Server(scenario, command, env, results / f"faults-{scenario}.log", processes=2)
        with running([server]):
            if scenario == "sigkill":
                sigkill_one_worker(server, metrics_dir)
            else:
                sigterm_under_load(server, metrics_dir)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
