"""Soak (issue 11): `make soak` (MINUTES=10) runs this checkout's server on the digits MLP and

1. for --minutes, 64 keep-alive connections in a closed loop, each request 1..64 random rows (V2, binary
   outputs), then
2. for --open-minutes, a fixed arrival rate (--rate, default half the closed loop's throughput) in an open
   loop: latency counts from each request's intended send time, so a stall cannot hide;

every answer's logits and probabilities compared bitwise with the answer for each of its rows sent alone;
the server's RSS sampled every second. Prints errors, mismatches, p50/p99/p99.9 per phase, and the RSS after
warm-up (the first minute, or a tenth of a short run) and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
from hostile_load import digits_repository, post, read_answer, server_for
from servers import HOST, MODEL, ROOT, Server, running

PATH = f"/v2/models/{MODEL}/infer"
POOL_ROWS = 512  # distinct rows; each request draws 1..64 of them
POOL_REQUESTS = 2048
OUTPUTS = [{"name": name, "parameters": {"binary_data": True}} for name in ("logits", "probabilities")]


@dataclass
class Case:
    request: bytes
    expected: bytes  # logits then probabilities of each row alone, float32 little-endian


@dataclass
class Phase:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0  # non-200 answers and transport failures
    mismatches: int = 0

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


def body_of(rows: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.reshape(-1).tolist()}
    return json.dumps({"inputs": [tensor], "outputs": OUTPUTS}).encode()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    status, body, _ = await read_answer(reader)
    return status, body


def header_length(body: bytes) -> int:
    # Our answers put the JSON header first; its length is where the JSON object ends.
    return json.JSONDecoder().raw_decode(body.decode("latin-1"))[1]


async def solo_answers(port: int, pool: np.ndarray) -> list[tuple[bytes, bytes]]:
    """(logits, probabilities) bytes of each pool row sent alone."""
    reader, writer = await asyncio.open_connection(HOST, port)
    answers = []
    for row in pool:
        status, body = await exchange(reader, writer, post(PATH, body_of(row[None, :])))
        assert status == 200, body[:200]
        blob = body[header_length(body) :]
        half = len(blob) // 2
        answers.append((blob[:half], blob[half:]))
    writer.close()
    return answers


def build_cases(pool: np.ndarray, solo: list[tuple[bytes, bytes]], rng: random.Random) -> list[Case]:
    cases = []
    for _ in range(POOL_REQUESTS):
        picks = [rng.randrange(len(pool)) for _ in range(rng.randint(1, 64))]
        expected = b"".join(solo[i][0] for i in picks) + b"".join(solo[i][1] for i in picks)
        cases.append(Case(post(PATH, body_of(pool[picks])), expected))
    return cases


async def one_request(
    connection: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], port: int, case: Case, phase: Phase
) -> None:
    """Send on the connection (reopened if it was closed); count the answer and compare its bits."""
    try:
        if not connection:
            connection.append(await asyncio.open_connection(HOST, port))
        reader, writer = connection[0]
        status, body = await exchange(reader, writer, case.request)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        phase.errors += 1
        connection.clear()
        return
    if status != 200:
        phase.errors += 1
    elif body[header_length(body) :] != case.expected:
        phase.mismatches += 1
    else:
        phase.ok += 1


async def closed_phase(port: int, cases: list[Case], seconds: float, phase: Phase, rng: random.Random) -> None:
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await one_request(connection, port, rng.choice(cases), phase)
            phase.latencies_s.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(64)))


async def open_phase(
    port: int, cases: list[Case], seconds: float, rate: float, phase: Phase, rng: random.Random
) -> None:
    """Request i is due at start + i / rate; whichever of 64 connections is free sends it, and its latency
    counts from the due time (a request waiting for a free connection is a late request)."""
    start = time.perf_counter()
    total = int(seconds * rate)
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        connection: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        while next_index < total:
            due = start + next_index / rate
            next_index += 1
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await one_request(connection, port, rng.choice(cases), phase)
            phase.latencies_s.append(time.perf_counter() - due)

    await asyncio.gather(*(client() for _ in range(64)))


async def sample_rss(server: Server, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    start = time.perf_counter()
    while not stop.is_set():
        samples.append((time.perf_counter() - start, server.rss_mb()[0]))
        await asyncio.sleep(1.0)


async def soak(server: Server, args: argparse.Namespace) -> tuple[list[Phase], list[tuple[float, float]], float]:
    from sklearn.datasets import load_digits

    rng = random.Random(args.seed)
    data = load_digits().data.astype(np.float32)
    pool = data[np.random.default_rng(args.seed).choice(len(data), POOL_ROWS, replace=False)]
    solo = await solo_answers(server.port, pool)
    cases = build_cases(pool, solo, rng)
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, samples, stop))
    closed, opened = Phase("closed loop, 64 connections"), Phase("open loop")
    await closed_phase(server.port, cases, args.minutes * 60, closed, rng)
    rate = args.rate or max(1.0, 0.5 * closed.ok / (args.minutes * 60))
    opened.name = f"open loop, {rate:.0f} req/s"
    await open_phase(server.port, cases, args.open_minutes * 60, rate, opened, rng)
    stop.set()
    await sampler
    return [closed, opened], samples, rate


def report(phases: list[Phase], samples: list[tuple[float, float]], args: argparse.Namespace) -> None:
    warm_s = min(60.0, args.minutes * 6)
    warm = next((rss for t, rss in samples if t >= warm_s), samples[-1][1])
    end = samples[-1][1]
    print(f"\nsoak: {args.minutes:g} min closed + {args.open_minutes:g} min open; load average {os.getloadavg()}")
    print("| phase                          | requests | errors | mismatches | p50 ms  | p99 ms  | p99.9 ms |")
    print("|--------------------------------|----------|--------|------------|---------|---------|----------|")
    for phase in phases:
        count = phase.ok + phase.errors + phase.mismatches
        print(
            f"| {phase.name:<30} | {count:8d} | {phase.errors:6d} | {phase.mismatches:10d} | "
            f"{phase.percentile_ms(0.5):7.1f} | {phase.percentile_ms(0.99):7.1f} | {phase.percentile_ms(0.999):8.1f} |"
        )
    growth = 100 * (end - warm) / warm
    print(
        f"RSS (server processes): after warm-up ({warm_s:g} s) {warm:.1f} MB, at the end {end:.1f} MB "
        f"({growth:+.2f}%); max {max(r for _, r in samples):.1f} MB over {len(samples)} samples"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="closed-loop phase")
    parser.add_argument("--open-minutes", type=float, default=2.0, help="open-loop phase")
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop requests/s (0: half the closed loop's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    server = server_for(ROOT, digits_repository(ROOT, results), results)
    with running([server]):
        phases, samples, _ = asyncio.run(soak(server, args))
    report(phases, samples, args)
    return 1 if any(phase.errors or phase.mismatches for phase in phases) else 0


if __name__ == "__main__":
    raise SystemExit(main())
