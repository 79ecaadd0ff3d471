"""`--chunk-rows auto` against fixed C = 32 and plain FastAPI, for three models on this machine.

    python bench/chunk_rows.py [--duration 5] [--bounds-ms 0.1,0.5]

Models: the digits MLP 64-256-256-10 (trained by `make bench`'s cache, or trained here), an MLP
784-1024-1024-10 and the CNN 1x28x28 (32, 64) (random weights with BatchNorm statistics from random batches:
timings only). Prints, per model, the calibration the `auto` server did at load (ms per full C-row chunk, rows/s, read
from its metadata) and the C it chose; then, for one server per (model, setting), one process each, driven
by wrk: a lone connection's p50 and 64 connections' req/s, one-row V1 requests, one run each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import urllib.request
from pathlib import Path

import numpy as np
from run_bench import prepare_model
from servers import HOST, PYTHON, ROOT, Server, running
from wrk import BENCH, ensure_wrk, run_wrk

from models import ArchConfig, CNNConfig, MLPConfig, list_versions

BIG_MLP = MLPConfig(784, 10, hidden=(1024, 1024), norm="batch", dropout=0.2)
CNN = CNNConfig(1, 28, 28, 10, channels=(32, 64), norm="batch", dropout=0.2)


def generated_model(repository: Path, name: str, config: ArchConfig) -> Path:
    """A checkpoint with random weights and BatchNorm statistics from a few random train-mode batches."""
    import torch

    from models import InputSpec, Manifest, build_model, save_checkpoint

    if list_versions(repository, name):
        return repository
    torch.manual_seed(0)
    model = build_model(config).train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn((64, *config.input_shape)) * 2 + 1)
    features = int(np.prod(config.input_shape))
    manifest = Manifest(
        name=name,
        version=0,
        architecture=config,
        input=InputSpec(shape=config.input_shape, feature_names=tuple(f"f{i}" for i in range(features))),
        class_labels=tuple(str(i) for i in range(config.num_classes)),
        training={"source": "bench chunk_rows: random weights, timings only"},
    )
    save_checkpoint(repository, model, manifest)
    return repository


def served_calibration(server: Server, name: str) -> tuple[int, dict[str, float]]:
    """The calibration the running server did at load, from its metadata: (chosen C, ms per chunk by C)."""
    with urllib.request.urlopen(f"{server.url}/v2/models/{name}", timeout=10) as answer:
        parameters = json.loads(answer.read())["parameters"]
    return parameters["chunk_rows"], parameters.get("chunk_timings_ms", {})


def one_row_body(results: Path, name: str, features: int) -> Path:
    path = results / f"chunk-rows-body-{name}.json"
    row = np.random.default_rng(0).standard_normal(features).round(4).tolist()
    path.write_text(json.dumps({"instances": [row]}))
    return path


def servers_for(name: str, repository: Path, bounds_ms: list[float], results: Path) -> list[Server]:
    """One `auto` server per bound, one with C = 32, one plain FastAPI: one process each."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("INVARIANT_")}
    env["PYTHONUNBUFFERED"] = "1"
    ours = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--workers", "1"]
    ours += ["--device", "cpu"]
    settings = {
        f"auto {bound:g}ms": ["--chunk-rows", "auto", "--chunk-latency-bound-ms", str(bound)] for bound in bounds_ms
    }
    settings["C=32"] = ["--chunk-rows", "32"]
    servers = [
        Server(f"{name} {label}", [*ours, *flags], env, results / f"chunk-rows-{name}-{label.replace(' ', '-')}.log")
        for label, flags in settings.items()
    ]
    plain = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH), "--host", HOST, "--loop", "uvloop", "--http"]
    plain += ["httptools", "--no-access-log", "--workers", "1", "baseline_plain:app"]
    plain_env = {**env, "BENCH_REPOSITORY": str(repository), "BENCH_MODEL": name}
    servers.append(Server(f"{name} plain FastAPI", plain, plain_env, results / f"chunk-rows-{name}-plain.log"))
    return servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured level (default 5)")
    parser.add_argument("--bounds-ms", help="comma-separated --chunk-latency-bound-ms values, one auto server each")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="cache and logs (git-ignored)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings

    default_bound = Settings.model_fields["chunk_latency_bound_ms"].default
    bounds_ms = [float(b) for b in args.bounds_ms.split(",")] if args.bounds_ms else [default_bound]
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    wrk = ensure_wrk()
    digits_repository, provenance = prepare_model(results)
    models = {
        "digits": (digits_repository, 64, f"mlp 64-256-256-10 ({provenance})"),
        "mlp784": (generated_model(results / "repo-mlp784", "mlp784", BIG_MLP), 784, "mlp 784-1024-1024-10"),
        "cnn": (generated_model(results / "repo-cnn", "cnn", CNN), 784, "cnn 1x28x28 (32, 64)"),
    }
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores; 1 torch thread; auto bounds {bounds_ms} ms")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    rows: list[str] = []
    for name, (repository, features, label) in models.items():
        body = one_row_body(results, name, features)
        with running(servers_for(name, repository, bounds_ms, results)) as servers:
            print(label, flush=True)
            for server in servers[: len(bounds_ms)]:
                chosen, timings = served_calibration(server, name)
                cells = "  ".join(f"C={c}: {ms:.3f} ms ({int(c) / ms * 1000:,.0f} rows/s)" for c, ms in timings.items())
                print(f"  {server.name}: chose C = {chosen} at load from  {cells}", flush=True)
            loads = {}
            for server in servers:
                lone = run_wrk(wrk, server.url, body, 1, args.duration, 1, name)
                busy = run_wrk(wrk, server.url, body, 64, args.duration, 1, name)
                loads[server.name] = (lone, busy)
                errors = lone.failed + busy.failed
                print(f"  {server.name:<24} c=1 p50 {lone.p50_ms:6.3f} ms  c=64 {busy.rps:7.0f} req/s  errors {errors}")
        plain_p50 = loads[f"{name} plain FastAPI"][0].p50_ms
        for server_name, (lone, busy) in loads.items():
            rows.append(
                f"| {server_name:<24} | {lone.p50_ms:>10.3f} | {lone.p50_ms / plain_p50:>9.2f} | {busy.rps:>10.0f} |"
            )
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print(f"| {'server':<24} | {'c=1 p50 ms':>10} | {'x plain':>9} | {'c=64 req/s':>10} |")
    print(f"|{'-' * 26}|{'-' * 12}|{'-' * 11}|{'-' * 12}|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
