"""The hot path's table (issue 27), one run, side by side: requests per core and the tail on every route.

    python bench/hot_path.py [--candidate /work/main] [--duration 5] [--skip cnn invariance]

1. Our server (one process; with an API key; two workers), bare ASGI and plain FastAPI, and optionally the
   service/ of another checkout, driven by wrk at 1 and 64 connections on V1 JSON, V2 JSON and V2 binary rows
   (one row each): req/s, p50, p99 and p99.9, non-2xx, and the ratios the issue's targets are stated in.
2. The CNN 1x28x28 at C = 32 (random weights: timings only) takes the thread placement at load; at 64
   connections on it, a lone client's GET /v2/health/ready latencies (p50, p99): the loop is never held
   by a forward.
3. The invariance probe (deploy/invariance_check.py --v2) while wrk sends 1-row and 64-row requests at 48 + 16
   connections, with --placement loop and --placement thread: 0 mismatches in both.
Prints `uptime`'s load before and after each part: other work on the machine slows every server alike.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from chunk_rows import CNN, generated_model, one_row_body
from run_bench import prepare_model
from servers import HOST, MODEL, PYTHON, ROOT, Server, running
from wrk import BENCH, Load, ensure_wrk, run_wrk

API_KEY = "bench-key-0123456789abcdef"
FEATURES = 64
LEVELS = (1, 64)


def bodies(results: Path) -> dict[str, tuple[Path, dict[str, str], str]]:
    """route -> (body file, headers, path template): one digits row as V1 JSON, V2 JSON and V2 binary."""
    row = np.random.default_rng(0).uniform(0, 16, FEATURES).round(2).astype(np.float32)
    v1, v2, binary = results / "hot-v1.json", results / "hot-v2.json", results / "hot-v2.bin"
    v1.write_text(json.dumps({"instances": [row.tolist()]}))
    tensor = {"name": "input", "shape": [1, FEATURES], "datatype": "FP32"}
    v2.write_text(json.dumps({"inputs": [{**tensor, "data": row.tolist()}]}))
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 4 * FEATURES}}]}).encode()
    binary.write_bytes(header + row.astype("<f4").tobytes())
    binary_headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return {
        "V1 JSON": (v1, {}, "/v1/models/{m}:predict"),
        "V2 JSON": (v2, {}, "/v2/models/{m}/infer"),
        "V2 binary": (binary, binary_headers, "/v2/models/{m}/infer"),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def ours(name: str, repository: Path, results: Path, *flags: str, cwd: Path = ROOT, workers: int = 1) -> Server:
    env = {key: value for key, value in os.environ.items() if not key.startswith("INVARIANT_")}
    env["PYTHONUNBUFFERED"] = "1"
    command = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--workers", str(workers)]
    return Server(name, [*command, *flags], env, results / f"hot-{name}.log", cwd=cwd, processes=workers)


def baseline(name: str, module: str, repository: Path, results: Path) -> Server:
    uvicorn = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH), "--host", HOST, "--loop", "uvloop"]
    uvicorn += ["--http", "httptools", "--no-access-log", "--log-level", "info", "--workers", "1", f"{module}:app"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_REPOSITORY": str(repository), "BENCH_MODEL": MODEL}
    return Server(name, uvicorn, env, results / f"hot-{name}.log")


def requests_table(args: argparse.Namespace, wrk: str, repository: Path, results: Path) -> None:
    keys = results / "hot-api.keys"
    keys.write_text(API_KEY + "\n")
    keys.chmod(0o600)  # the server refuses key files others can read
    servers = [
        ours("ours", repository, results),
        ours("ours+key", repository, results, "--api-keys-file", str(keys)),
        ours("ours x2", repository, results, workers=2),
        baseline("bare", "baseline_bare", repository, results),
        baseline("plain", "baseline_plain", repository, results),
    ]
    if args.candidate:
        servers.append(ours("candidate", repository, results, cwd=Path(args.candidate).resolve()))
    routes = bodies(results)
    print(f"1. one-row requests, wrk -t1 {args.duration:g} s per cell; {uptime()}", flush=True)
    found: dict[tuple[str, str, int], Load] = {}
    with running(servers):
        for server in servers:
            headers = {"Authorization": f"Bearer {API_KEY}"} if server.name == "ours+key" else {}
            chosen = list(routes) if server.name not in ("bare", "plain", "ours x2") else ["V1 JSON"]
            for route in chosen:
                body, extra, template = routes[route]
                target = server.url + template.format(m=MODEL)
                run_wrk(wrk, server.url, body, 64, 1, 1, target=target, headers={**headers, **extra})  # warm-up
                for connections in LEVELS if server.name != "ours x2" else (64,):
                    load = run_wrk(wrk, server.url, body, connections, args.duration, 1, target=target,
                                   headers={**headers, **extra})  # fmt: skip
                    found[server.name, route, connections] = load
    print(f"   after: {uptime()}\n")
    print("| server | route | c1 p50 ms | c64 req/s | c64 p50 ms | c64 p99 ms | c64 p99.9 ms | non-2xx/errors |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, route, connections), load in found.items():
        if connections != 64:
            continue
        lone = found.get((name, route, 1))
        cell = f"{lone.p50_ms:.3f}" if lone else "-"
        failed = load.failed + (lone.failed if lone else 0)
        print(f"| {name} | {route} | {cell} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} "
              f"| {load.p999_ms:.2f} | {failed} |")  # fmt: skip
    bare, plain = found["bare", "V1 JSON", 64], found["plain", "V1 JSON", 1]
    one, two = found["ours", "V1 JSON", 64], found["ours x2", "V1 JSON", 64]
    print(f"\nours c64 / bare c64: {one.rps / bare.rps:.2f}x (target >= 0.36x); with a key: "
          f"{found['ours+key', 'V1 JSON', 64].rps / bare.rps:.2f}x")  # fmt: skip
    print(f"ours c1 p50 / plain c1 p50: {found['ours', 'V1 JSON', 1].p50_ms / plain.p50_ms:.2f}x (target <= 0.7x)")
    print(f"two workers / one: {two.rps / one.rps:.2f}x (target >= 1.5x; {os.cpu_count()} cores shared)\n")


def ready_latencies(url: str, seconds: float) -> list[float]:
    """Sequential GET /v2/health/ready on one connection for `seconds`: each answer's latency in ms."""
    where = urlparse(url)
    connection = http.client.HTTPConnection(where.hostname or HOST, where.port, timeout=10)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        connection.request("GET", "/v2/health/ready")
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"/v2/health/ready answered {answer.status}")
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)
    connection.close()
    return latencies


def cnn_readiness(args: argparse.Namespace, wrk: str, results: Path) -> None:
    repository = generated_model(results / "repo-cnn", "cnn", CNN)
    body = one_row_body(results, "cnn", 28 * 28)
    server = ours("cnn", repository, results, "--chunk-rows", "32")
    print(f"2. CNN 1x28x28 (32, 64) at C = 32, c64 on V1 + a lone GET /v2/health/ready loop; {uptime()}")
    with running([server]):
        placement = metadata_of(f"{server.url}/v2/models/cnn")["parameters"].get("placement", "?")
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(run_wrk, wrk, server.url, body, 64, args.duration, 1, "cnn")
            time.sleep(0.5)
            latencies = ready_latencies(server.url, args.duration - 1)
            busy = load.result()
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"   placement {placement}; c64 {busy.rps:,.0f} req/s p99 {busy.p99_ms:.1f} ms, errors {busy.failed}")
    print(f"   ready: {len(latencies)} answers, p50 {p50:.2f} ms, p99 {p99:.2f} ms (target <= 5 ms); {uptime()}\n")


def metadata_of(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        found: dict[str, Any] = json.loads(answer.read())
        return found


def invariance_under_load(args: argparse.Namespace, wrk: str, repository: Path, results: Path) -> None:
    one_row = results / "hot-v1.json"
    many = results / "hot-v1-64.json"
    row = json.loads(one_row.read_text())["instances"][0]
    many.write_text(json.dumps({"instances": [row] * 64}))
    print(f"3. invariance probe under c48 1-row + c16 64-row load; {uptime()}")
    for placement in ("loop", "thread"):
        server = ours(f"probe-{placement}", repository, results, "--placement", placement)
        with running([server]), ThreadPoolExecutor(2) as pool:
            small = pool.submit(run_wrk, wrk, server.url, one_row, 48, args.duration + 20, 1)
            large = pool.submit(run_wrk, wrk, server.url, many, 16, args.duration + 20, 64)
            time.sleep(1)
            check = [PYTHON, str(ROOT / "deploy" / "invariance_check.py"), "--url", server.url, "--model", MODEL]
            done = subprocess.run([*check, "--v2"], capture_output=True, text=True, check=False, cwd=ROOT)
            loads = small.result(), large.result()
        summary = (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]
        errors = loads[0].failed + loads[1].failed
        print(f"   --placement {placement}: exit {done.returncode}; {summary}")
        print(f"     load during it: {loads[0].rps:,.0f} + {loads[1].rps:,.0f} req/s, errors {errors}")
    print(f"   after: {uptime()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured cell (default 5)")
    parser.add_argument("--candidate", help="also run the service/ of this checkout (A/B)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["requests", "cnn", "invariance"])
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="cache and logs (git-ignored)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    wrk = ensure_wrk()
    repository, provenance = prepare_model(results)
    print(f"model: {MODEL} mlp 64-256-256-10 ({provenance}); {os.cpu_count()} cores\n")
    bodies(results)
    if "requests" not in args.skip:
        requests_table(args, wrk, repository, results)
    if "cnn" not in args.skip:
        cnn_readiness(args, wrk, results)
    if "invariance" not in args.skip:
        invariance_under_load(args, wrk, repository, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
