"""Issue 19's latency table: a proven shape pair (C_small = 8 with C = 32) against one fixed shape (C = 32,
`--small-chunk-rows 0`) and the plain FastAPI server (one `model(x)` per request), one process each.

    python bench/pair_bench.py [--seconds 6]

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


def servers(name: str, repository: Path, results: Path) -> list[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    ours = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--chunk-rows", "32"]
    ours += ["--no-access-log"]
    uvicorn = [PYTHON, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "--host", HOST, "--loop", "uvloop"]
    uvicorn += ["--http", "httptools", "--no-access-log", "--workers", "1", "baseline_plain:app"]
    plain_env = {**env, "BENCH_REPOSITORY": str(repository), "BENCH_MODEL": name}
    return [
        Server("pair 8/32", ours, env, results / f"{name}-pair.log"),
        Server("fixed 32", [*ours, "--small-chunk-rows", "0"], env, results / f"{name}-fixed.log"),
        Server("plain FastAPI", uvicorn, plain_env, results / f"{name}-plain.log"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
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
        for server in servers(name, repository, results):
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
    return 0


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
