"""Issue 20, items 1 and 2: what pre-auth floods make a replica hold, before and after. One server per
checkout (this one, and optionally an older one in a git worktree), the digits MLP, API keys on (the floods
need no key: they never finish a request head, or never read an answer).

    python bench/flood.py [--before /tmp/wt-main] [--seconds 10]

Floods, each alone for --seconds against a fresh server, then the server's RSS and a liveness probe:
- headers: one connection streaming `a: b\\r\\n` header fields, never ending the head;
- huge values: 8 connections each streaming one header value that never ends;
- pipelining: one connection streaming `GET /v2/health/live` requests without reading an answer.
Prints peak RSS over idle (target: within 100 MB) and /v2/health/live latency during the flood.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
import urllib.request
from pathlib import Path

from hostile_load import digits_repository, server_for
from servers import HOST, ROOT, Server, running

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"


def stream(port: int, first: bytes, chunk: bytes, stop: threading.Event) -> int:
    """Send `first`, then `chunk` until `stop` or the server closes; the bytes it took."""
    sent = 0
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(first)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):  # the server stopped reading: keep trying until the end
                sock.sendall(chunk)
                sent += len(chunk)
    return sent


FLOODS: dict[str, tuple[int, bytes, bytes]] = {  # connections, first bytes, repeated bytes
    "headers a: b": (1, HEAD, b"a: b\r\n" * 2048),
    "8 huge values": (8, HEAD + b"X-Big: ", b"v" * 65536),
    "pipelined GETs": (1, b"", LIVE * 2048),
}


def live_ms(server: Server) -> float:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=10) as answer:
            answer.read()
    except OSError:
        return float("inf")
    return (time.perf_counter() - started) * 1000


def flood(server: Server, name: str, seconds: float) -> tuple[float, float, float, int]:
    """(idle RSS MB, peak RSS MB, worst liveness ms during the flood, bytes the server took)."""
    connections, first, chunk = FLOODS[name]
    idle, _ = server.rss_mb()
    stop = threading.Event()
    taken: list[int] = []
    threads = [
        threading.Thread(target=lambda: taken.append(stream(server.port, first, chunk, stop)), daemon=True)
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    peak, worst = idle, 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, server.rss_mb()[0])
        worst = max(worst, live_ms(server))
        time.sleep(0.25)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    return idle, peak, worst, sum(taken)


def run(label: str, code: Path, results: Path, seconds: float, rows: list[str]) -> None:
    repository = digits_repository(code, results)
    keys = results / "flood-api.keys"
    keys.write_text("flood-key-" + "k7Qz" * 10 + "\n")
    keys.chmod(0o600)
    for name in FLOODS:  # a fresh server each: memory a flood leaves behind does not blur the next
        server = server_for(code, repository, results, "--api-keys-file", str(keys))
        with running([server]):
            idle, peak, worst, taken = flood(server, name, seconds)
            after = live_ms(server)
            rows.append(
                f"| {label:<8} | {name:<15} | {idle:>8.0f} | {peak:>8.0f} | {peak - idle:>8.0f} | "
                f"{taken / 2**20:>9.1f} | {worst:>9.1f} | {after:>8.1f} |"
            )
            print(rows[-1], flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="an older checkout (git worktree) to run first")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=Path("/tmp/invariant-flood"))
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    print("| checkout | flood           | idle MB  | peak MB  | +MB      | sent MiB  | live ms   | after ms |")
    print("|----------|-----------------|----------|----------|----------|-----------|-----------|----------|")
    if args.before is not None:
        run("before", args.before.resolve(), args.results, args.seconds, rows)
    run("this", ROOT, args.results, args.seconds, rows)


if __name__ == "__main__":
    main()
