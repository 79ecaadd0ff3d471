"""`make bench-peers`: the serving systems users would pick instead, serving the same digits MLP with batching
on, against invariant-serve: a speed table and a batch-dependence table.

    python bench/peers/run_peers.py [--only litserve ours] [--duration 5] [--rounds 20]

Peers (each in its own venv under bench/peers/.venvs/, created here on first use with torch 2.13.0 from the
local wheel; never the project's environment): MLServer 1.7.1 (adaptive batching, V2; uvloop pinned to
0.21.0, its inference worker crash-loops with >= 0.22), Ray Serve 2.60.0 (@serve.batch, max_ongoing_requests
64), BentoML 1.4.40 (batchable API), LitServe 0.2.19 (batching). Each: max batch 64, 2 ms of wait (BentoML:
a latency budget of 1000 ms, its docs' value), one replica, one torch thread, plain `model(batch)` on the
batch its batcher forms. Ours: `python -m service`, one worker, its defaults.

Speed: wrk -t1, one-row requests, 1 and 64 connections, one run each. Batch dependence: a probe row's lone
answer, then 20 rounds of the probe sent among 63 concurrent single-row requests; a round counts when the
probe's logits differ in any bit from its lone answer; "lone stable": the lone answer asked 5 times before
and 5 after gave the same bits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

PEERS_DIR = Path(__file__).resolve().parent
BENCH = PEERS_DIR.parent
sys.path.insert(0, str(BENCH))

from run_bench import prepare_model  # noqa: E402
from servers import HOST, PYTHON, ROOT, Server, free_port  # noqa: E402
from wrk import ensure_wrk, run_wrk  # noqa: E402

from models import list_versions  # noqa: E402

VENVS = PEERS_DIR / ".venvs"
BASE_PACKAGES = ["torch==2.13.0", "numpy==2.4.6", "safetensors==0.8.0"]
READY_TIMEOUT_S = 240.0
Row = list[float]


@dataclass(frozen=True)
class Peer:
    label: str
    packages: list[str]  # empty: the project's own environment (ours)
    command: Callable[[Path, int], list[str]]  # (venv bin folder, port) -> argv
    path: str
    body: Callable[[Row], Any]
    logits: Callable[[Any], Row]
    cwd: Path = PEERS_DIR


def _v2_body(row: Row) -> Any:
    return {"inputs": [{"name": "rows", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


PEERS: dict[str, Peer] = {
    "ours": Peer(
        "invariant-serve (1 worker, C=32)", [],
        lambda _bin, port: [PYTHON, "-m", "service", "--host", HOST, "--port", str(port), "--workers", "1"],
        "/v1/models/digits:predict", lambda row: {"instances": [row]},
        lambda answer: answer["predictions"][0]["logits"], ROOT,
    ),
    "mlserver": Peer(
        "MLServer 1.7.1, adaptive batching", ["mlserver==1.7.1", "uvloop==0.21.0"],
        lambda bin_dir, _port: [str(bin_dir / "mlserver"), "start", str(PEERS_DIR / "mlserver")],
        "/v2/models/digits/infer", _v2_body, lambda answer: answer["outputs"][0]["data"],
    ),
    "ray": Peer(
        "Ray Serve 2.60.0, @serve.batch", ["ray[serve]==2.60.0"],
        lambda bin_dir, _port: [str(bin_dir / "python"), str(PEERS_DIR / "ray_app.py")],
        "/", lambda row: {"row": row}, lambda answer: answer["logits"],
    ),
    "bentoml": Peer(
        "BentoML 1.4.40, batchable", ["bentoml==1.4.40"],
        lambda bin_dir, port: [str(bin_dir / "bentoml"), "serve", "bentoml_app:Digits", "--port", str(port)],
        "/predict", lambda row: {"rows": [row]}, lambda answer: answer[0],
    ),
    "litserve": Peer(
        "LitServe 0.2.19, batching", ["litserve==0.2.19"],
        lambda bin_dir, _port: [str(bin_dir / "python"), str(PEERS_DIR / "litserve_app.py")],
        "/predict", lambda row: {"row": row}, lambda answer: answer["logits"],
    ),
}  # fmt: skip


def ensure_venv(name: str, packages: list[str]) -> Path:
    """The peer's own venv (bin folder), created and installed once; a stamp records what was installed."""
    venv = VENVS / name
    stamp = venv / "installed.txt"
    wanted = "\n".join([*BASE_PACKAGES, *packages])
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    print(f"creating {venv.relative_to(ROOT)} ({' '.join(packages)}); a few minutes ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    log = VENVS / f"{name}.install.log"
    with log.open("wb") as out:
        pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", *BASE_PACKAGES, *packages]
        if subprocess.run(pip, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise SystemExit(f"bench-peers: installing {name} failed, see {log}")
    stamp.write_text(wanted)
    return venv / "bin"


def launch(name: str, peer: Peer, checkpoint: Path, results: Path) -> Server:
    bin_dir = Path(sys.executable).parent if not peer.packages else ensure_venv(name, peer.packages)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INVARIANT_", "VIRTUAL_ENV"))}
    env |= {
        "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{ROOT}:{PEERS_DIR}:{PEERS_DIR / 'mlserver'}",
        "PEER_CHECKPOINT": str(checkpoint), "PEER_PORT": str(port), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "MLSERVER_HOST": HOST, "MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()), "BENTOML_DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0",
        "INVARIANT_REPOSITORY": str(checkpoint.parent.parent),
    }  # fmt: skip
    server = Server(name, peer.command(bin_dir, port), env, results / f"peer-{name}.log", cwd=peer.cwd, port=port)
    with server.log.open("wb") as log:
        server.process = subprocess.Popen(
            server.command, cwd=server.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return server


def wait_answering(server: Server, peer: Peer, row: Row) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert server.process is not None
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        try:
            answer = httpx.post(server.url + peer.path, json=peer.body(row), timeout=5)
            last = f"{answer.status_code} {answer.text[:300]}"
            if answer.status_code == 200 and len(peer.logits(answer.json())) == 10:
                return
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{server.name} not answering within {READY_TIMEOUT_S:g} s ({last}); see {server.log}")


def bits(logits: Row) -> bytes:
    return np.asarray(logits, dtype=np.float32).tobytes()


async def batch_dependence(url: str, peer: Peer, probe: Row, rounds: int) -> tuple[int, bool]:
    """(rounds whose probe answer differed from its lone answer, lone answer stable)."""
    rng = np.random.default_rng(1)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def ask(row: Row) -> bytes:
            answer = await client.post(url, json=peer.body(row))
            answer.raise_for_status()
            return bits(peer.logits(answer.json()))

        lone_before = [await ask(probe) for _ in range(5)]
        differed = 0
        for _ in range(rounds):
            others = (rng.random((63, 64)) * 16).round(0).tolist()  # digits-like pixels 0..16
            position = int(rng.integers(64))
            rows = [*others[:position], probe, *others[position:]]
            answers = await asyncio.gather(*(ask(row) for row in rows))
            differed += answers[position] != lone_before[0]
        lone_after = [await ask(probe) for _ in range(5)]
    return differed, len(set(lone_before + lone_after)) == 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk level (default 5)")
    parser.add_argument("--rounds", type=int, default=20, help="batch-dependence rounds (default 20)")
    args = parser.parse_args()
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    wrk = ensure_wrk()
    repository, provenance = prepare_model(results)
    checkpoint = repository / "digits" / str(max(list_versions(repository, "digits")))
    from sklearn.datasets import load_digits

    probe: Row = load_digits().data[0].tolist()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.platform()}, {os.cpu_count()} cores; model: digits "
          f"mlp 64-256-256-10 ({provenance}); load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    speed: list[str] = []
    dependence: list[str] = []
    for name in args.only:
        peer = PEERS[name]
        server = launch(name, peer, checkpoint, results)
        try:
            wait_answering(server, peer, probe)
            body = results / f"peer-body-{name}.json"
            body.write_text(json.dumps(peer.body(probe)))
            # Probe first, on an idle server: after wrk stops, its 64 in-flight requests can still be queued and
            # would share a batch with a "lone" request.
            differed, stable = asyncio.run(batch_dependence(server.url + peer.path, peer, probe, args.rounds))
            lone = run_wrk(wrk, server.url, body, 1, args.duration, 1, target=server.url + peer.path)
            busy = run_wrk(wrk, server.url, body, 64, args.duration, 1, target=server.url + peer.path)
        finally:
            server.stop()
        errors = lone.failed + busy.failed
        speed.append(
            f"| {peer.label:<36} | {lone.rps:>9.0f} | {lone.p50_ms:>10.2f} | {busy.rps:>10.0f} | {busy.p99_ms:>11.2f} "
            f"| {errors:>6} |"
        )
        dependence.append(f"| {peer.label:<36} | {f'{differed}/{args.rounds}':>29} | {'yes' if stable else 'NO':>11} |")
        print(speed[-1], "\n" + dependence[-1], flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print(f"| {'server':<36} | c=1 req/s | c=1 p50 ms | c=64 req/s | c=64 p99 ms | errors |")
    print(f"|{'-' * 38}|-----------|------------|------------|-------------|--------|")
    print("\n".join(speed))
    print(f"\n| {'server':<36} | probe's bits differed, rounds | lone stable |")
    print(f"|{'-' * 38}|-------------------------------|-------------|")
    print("\n".join(dependence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
