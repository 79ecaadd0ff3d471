"""Issue 19's latency table: a proven shape pair (C_small = 8 with C = 32) against one fixed shape (C = 32,
`--small-chunk-rows 0`) and the plain FastAPI server (one `model(x)` per request), one process each.

    python bench/pair_bench.py [--seconds 6] [--smallest]

`--smallest` adds, per model, the pair at the smallest C_small that agrees natively here (docs/numerics.md:
4 for the MLP, 2 for the CNN) and prints the forward time per row count at load, which bounds a lone
request's latency from below.

Models: the 784-1024-1024-10 MLP and a CNN on 1x28x28 (BatchNorm, seeded weights: the kernels a shape takes do
not depend on the values). Per model and server: lone-request p50 (1 connection) and req/s at 64 connections,
single-row V1 JSON, with wrk. One run on a shared machine: read the columns side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from servers import HOST, PYTHON, ROOT, Server, running
from wrk import ensure_wrk, run_wrk

sys.path.insert(0, str(ROOT / "tests"))
from checkpoints import write_checkpoint

from models import CNNConfig, MLPConfig

MODELS: dict[str, MLPConfig | CNNConfig] = {
    "mlp784": MLPConfig(in_features=784, num_classes=10, hidden=(1024, 1024), norm="batch"),
    "cnn28": CNNConfig(in_channels=1, height=28, width=28, num_classes=10, norm="batch"),
}


SMALLEST_AGREEING = {"mlp784": 4, "cnn28": 2}


def servers(name: str, repository: Path, results: Path, smallest: bool) -> list[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    ours = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--chunk-rows", "32"]
    ours += ["--no-access-log"]
    uvicorn = [PYTHON, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "--host", HOST, "--loop", "uvloop"]
    uvicorn += ["--http", "httptools", "--no-access-log", "--workers", "1", "baseline_plain:app"]
    plain_env = {**env, "BENCH_REPOSITORY": str(repository), "BENCH_MODEL": name}
    smallest_rows = SMALLEST_AGREEING[name]
    extra = [*ours, "--small-chunk-rows", str(smallest_rows)]
    return [
        *([Server(f"pair {smallest_rows}/32", extra, env, results / f"{name}-pair-small.log")] if smallest else []),
        Server("pair 8/32", ours, env, results / f"{name}-pair.log"),
        Server("fixed 32", [*ours, "--small-chunk-rows", "0"], env, results / f"{name}-fixed.log"),
        Server("plain FastAPI", uvicorn, plain_env, results / f"{name}-plain.log"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--smallest", action="store_true", help="add the pair at the smallest agreeing C_small")
    args = parser.parse_args()
    wrk = ensure_wrk()
    results = Path(tempfile.mkdtemp(prefix="pair-bench-"))
    repository = results / "repository"
    print("| model | server | shape (metadata) | c1 p50 ms | c64 req/s | c64 p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, config in MODELS.items():
        write_checkpoint(repository, name, config)
        width = config.in_features if isinstance(config, MLPConfig) else config.height * config.width
        body = results / f"{name}.json"
        body.write_text(json.dumps({"instances": [[0.5] * width]}))
        for server in servers(name, repository, results, args.smallest):
            with running([server]):
                shape = _shape(server, name)
                target = f"{server.url}/v1/models/{name}:predict"
                run_wrk(wrk, server.url, body, 16, 2, 1, target=target)  # warm-up
                lone = run_wrk(wrk, server.url, body, 1, args.seconds, 1, target=target)
                many = run_wrk(wrk, server.url, body, 64, args.seconds, 1, target=target)
            errors = lone.failed + many.failed
            print(
                f"| {name} | {server.name} | {shape} | {lone.p50_ms:.3f} | {many.rps:,.0f} | {many.p99_ms:.2f} | "
                f"{errors} |",
                flush=True,
            )
    if args.smallest:
        print()
        print(forward_floor())
    return 0


def forward_floor() -> str:
    """The forward alone (one thread, as served), p50 of 300 runs per row count: a lone request can be no
    faster than the forward at C_small plus the server's round trip."""
    import time

    import torch

    from models.architectures import build_model

    torch.set_num_threads(1)
    lines = ["| model | rows | forward p50 ms |", "|---|---|---|"]
    for name, config in MODELS.items():
        model = build_model(config).eval()
        for rows in (1, SMALLEST_AGREEING[name], 8, 32):
            batch = torch.randn(rows, *config.input_shape)
            timings = []
            with torch.inference_mode():
                for attempt in range(350):
                    started = time.perf_counter()
                    model(batch)
                    if attempt >= 50:
                        timings.append(time.perf_counter() - started)
            lines.append(f"| {name} | {rows} | {sorted(timings)[len(timings) // 2] * 1e3:.3f} |")
    return "\n".join(lines)


def _shape(server: Server, name: str) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{server.url}/v2/models/{name}", timeout=10) as answer:
            parameters = json.loads(answer.read()).get("parameters", {})
    except OSError:
        return "-"
    small = parameters.get("small_chunk_rows")
    return f"C={parameters.get('chunk_rows')}" + (f", C_small={small}" if small else "") if parameters else "-"


if __name__ == "__main__":
    raise SystemExit(main())
