"""Issue 11, before and after: a small client beside large requests (fair scheduling) and beside oversized
bodies (early 413), against this checkout and an older one (a git worktree), one server at a time.

    python bench/hostile_bench.py --before /tmp/i11-base --seconds 20

Prints, per checkout: the 1-row client's answers, req/s, p50/p99 beside four clients sending 8,192-row
requests; its req/s alone and beside four clients sending 8 MiB bodies that are refused with 413.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from hostile_load import Record, closed_loop, digits_repository, post, server_for
from servers import MODEL, ROOT, running

PATH = f"/v1/models/{MODEL}:predict"
HEADER = (
    "| scenario                           | answers                | 200/s    | p50 ms   | p99 ms   | err  |\n"
    "|------------------------------------|------------------------|----------|----------|----------|------|"
)


def bodies() -> dict[str, bytes]:
    from sklearn.datasets import load_digits

    data = load_digits().data.astype(int).tolist()  # (1797, 64) integers 0..16
    large = [data[i % len(data)] for i in range(8192)]
    oversized: list[list[int]] = []
    size = 0
    while True:  # just under --max-body-bytes: read in full, then refused for its rows (not its size)
        row = data[len(oversized) % len(data)]
        size += len(json.dumps(row, separators=(",", ":"))) + 1
        if size > 8 * 1024 * 1024 - 1024:
            break
        oversized.append(row)
    return {
        "small": post(PATH, json.dumps({"instances": data[:1]}).encode()),
        "large": post(PATH, json.dumps({"instances": large}).encode()),
        "oversized": post(PATH, json.dumps({"instances": oversized}, separators=(",", ":")).encode()),
    }


async def scenario(port: int, small: bytes, other: bytes | None, seconds: float) -> tuple[Record, Record]:
    deadline = time.perf_counter() + seconds
    mine, theirs = Record(), Record()
    clients = [closed_loop(port, small, deadline, mine)]
    if other is not None:
        clients += [closed_loop(port, other, deadline, theirs) for _ in range(4)]
    await asyncio.gather(*clients)
    return mine, theirs


def describe(label: str, record: Record, seconds: float) -> str:
    statuses = " ".join(f"{k}:{v}" for k, v in sorted(record.statuses.items()))
    return (
        f"| {label:<34} | {statuses:<22} | {record.count(200) / seconds:8.1f} | "
        f"{record.percentile_ms(0.5):8.1f} | {record.percentile_ms(0.99):8.1f} | {record.errors + record.dropped:4d} |"
    )


def run_checkout(code: Path, results: Path, payload: dict[str, bytes], seconds: float) -> list[str]:
    repository = digits_repository(code, results)
    server = server_for(code, repository, results)
    lines = []
    with running([server]):
        port = server.port
        asyncio.run(scenario(port, payload["small"], None, 3))  # warm-up
        alone, _ = asyncio.run(scenario(port, payload["small"], None, seconds))
        beside_large, large = asyncio.run(scenario(port, payload["small"], payload["large"], seconds))
        beside_oversized, oversized = asyncio.run(scenario(port, payload["small"], payload["oversized"], seconds))
    lines.append(describe("1-row client alone", alone, seconds))
    lines.append(describe("1-row client beside 4 x 8,192 rows", beside_large, seconds))
    lines.append(describe("  (the 4 clients of 8,192 rows)", large, seconds))
    lines.append(describe("1-row client beside 4 x 8 MiB (413)", beside_oversized, seconds))
    lines.append(describe("  (the 4 clients of 8 MiB bodies)", oversized, seconds))
    return lines


def gzip_bomb(results: Path) -> None:
    """1 GiB of zeros, gzip-compressed (~1 MiB), against this checkout: time to the 413 and the server's RSS."""
    import urllib.error
    import urllib.request
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()
    server = server_for(ROOT, digits_repository(ROOT, results), results)
    with running([server]):
        rss_before = server.rss_mb()[0]
        request = urllib.request.Request(
            f"{server.url}{PATH}", bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
        started = time.perf_counter()
        try:
            urllib.request.urlopen(request, timeout=60)
            status, answer = 200, ""
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read().decode()
        seconds = time.perf_counter() - started
        rss_after = server.rss_mb()[0]
    print(
        f"\ngzip bomb: 1 GiB of zeros as {len(bomb) / 2**20:.2f} MiB of gzip -> {status} {answer!r} in "
        f"{seconds * 1000:.0f} ms; server RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="checkout of the older commit (git worktree)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bomb-only", action="store_true", help="only the gzip bomb, against this checkout")
    args = parser.parse_args()
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    if args.bomb_only:
        gzip_bomb(results)
        return
    payload = bodies()
    print(
        f"bodies: large {len(payload['large']) / 2**20:.2f} MiB, oversized {len(payload['oversized']) / 2**20:.2f} MiB"
    )
    if args.before is None:
        parser.error("--before is required (unless --bomb-only)")
    for label, code in (("before", args.before.resolve()), ("after", ROOT)):
        load_before = os.getloadavg()
        lines = run_checkout(code, results, payload, args.seconds)
        load_after = os.getloadavg()
        print(
            f"\n{label}: {code} ({args.seconds:g} s per row; load average {load_before[0]:.2f} -> {load_after[0]:.2f})"
        )
        print(HEADER)
        print("\n".join(lines), flush=True)
    gzip_bomb(results)


if __name__ == "__main__":
    main()
