"""Portable numerics: what they cost, and whether they make "different CPUs" agree, on one machine.

One machine has one CPU, so the other CPUs are simulated by capping every dispatch layer the way a smaller
CPU would: ATen (ATEN_CPU_CAPABILITY), MKL (MKL_ENABLE_INSTRUCTIONS) and oneDNN (ONEDNN_MAX_CPU_ISA). Each
simulated CPU runs a plain server and a `--portable-numerics` one (which sets ATEN_CPU_CAPABILITY,
MKL_CBWR and ONEDNN_MAX_CPU_ISA over the caps; MKL_ENABLE_INSTRUCTIONS stays, so MKL_CBWR must win over it).
For each server: its numerics fingerprint and the digest of its answers to the same probe rows (C+1 rows,
service/guarantee/probe.py) for the digits MLP and a digits CNN; then groups of servers whose bits agree. Then the cost:
wrk against the native plain and native portable servers (requests/s and rows/s, p50), interleaved.

    python bench/numerics_bench.py [--seconds 5]

A real second CPU (a GPU machine's host) is the test this simulation stands in for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from run_bench import prepare_model
from servers import HOST, PYTHON, ROOT, Server
from wrk import BENCH, ensure_wrk

from service.guarantee.probe import group_by_digest
from service.guarantee.probe_http import ProbeClient, ProbeError, replica_digest

MODELS = ("digits", "digits-cnn")
# name -> environment of a simulated CPU (empty: this machine's own)
CPUS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4.2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
LOADS = (("digits", 1, 1), ("digits", 64, 16), ("digits-cnn", 64, 16))  # (model, rows per request, connections)


def prepare_cnn(repository: Path, results: Path) -> None:
    from models import list_versions

    if list_versions(repository, "digits-cnn"):
        return
    command = [PYTHON, "-m", "training", "--data", "digits", "--arch", "cnn", "--epochs", "3", "--name", "digits-cnn"]
    with (results / "training-cnn.log").open("wb") as out:
        subprocess.run([*command, "--repository", str(repository)], cwd=ROOT, check=True, stdout=out, stderr=out)


def build(repository: Path, results: Path) -> dict[str, Server]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INVARIANT_", "ATEN_", "MKL_", "ONEDNN_"))}
    flags = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--audit-fraction", "0"]
    servers = {}
    for cpu, env in CPUS.items():
        for portable in (False, True):
            name = f"{cpu} {'portable' if portable else 'plain'}"
            command = [*flags, *(["--portable-numerics"] if portable else [])]
            log = results / f"numerics-{cpu}-{'portable' if portable else 'plain'}.log"
            servers[name] = Server(name, command, {**base, **env, "PYTHONUNBUFFERED": "1"}, log)
    return servers


@contextlib.contextmanager
def started(servers: list[Server]) -> Iterator[None]:
    """Every server up and past loading (live; a server whose models the self-test refused is not ready)."""
    try:
        for server in servers:
            server.launch()
        deadline = time.monotonic() + 300
        for server in servers:
            while not _live(server):
                if time.monotonic() > deadline or (server.process is not None and server.process.poll() is not None):
                    raise RuntimeError(f"{server.name} did not start; see {server.log}")
                time.sleep(0.5)
        yield
    finally:
        for server in servers:
            server.stop()


def _live(server: Server) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=2) as answer:
        return answer.status == 200
    return False


def agreement(servers: dict[str, Server]) -> None:
    digests: dict[str, dict[str, str]] = {model: {} for model in MODELS}
    print(f"\n{'server':<18} {'ATen':<8} {'fingerprint':<17} " + " ".join(f"{m + ' digest':<18}" for m in MODELS))
    for name, server in servers.items():
        client = ProbeClient(server.url)
        row = []
        fingerprint, capability = "-", "-"
        for model in MODELS:
            try:
                digest, answer = replica_digest(client, client.model(model), None)
            except ProbeError:  # refused: its self-test failed on this simulated CPU (reason in the log)
                row.append(f"{'REFUSED':<18}")
                continue
            digests[model][name] = digest
            fingerprint = answer.headers.get("x-numerics-fingerprint", "?")
            capability = client.request(f"/v2/models/{model}").body["parameters"]["numerics"]["cpu_capability"]
            row.append(f"{digest:<18}")
        print(f"{name:<18} {capability:<8} {fingerprint:<17} " + " ".join(row))
    for name, server in servers.items():
        for line in server.log.read_text(errors="replace").splitlines():
            if "REFUSED" in line:
                print(f"  {name}: {line.split('invariant.registry: ', 1)[-1]}")
    for model in MODELS:
        for kind in ("plain", "portable"):
            subset = {n: d for n, d in digests[model].items() if n.endswith(kind)}
            groups = group_by_digest(subset)
            verdict = "all agree" if len(groups) == 1 else f"{len(groups)} different bit patterns"
            serving = f"{len(subset)} of {len(CPUS)} CPUs serve"
            print(f"{model:<11} {kind:<9} {serving}: {verdict}: {list(groups.values())}")


def cost(servers: dict[str, Server], wrk: str, seconds: float, results: Path) -> None:
    from sklearn.datasets import load_digits

    data = load_digits().data.tolist()
    print(f"\n{'load':<28} {'server':<16} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} {'errors':>6}")
    for model, rows, connections in LOADS:
        body = results / f"numerics-body-{rows}.json"
        body.write_text(json.dumps({"instances": data[:rows]}))
        for name in ("native plain", "native portable"):
            url = f"{servers[name].url}/v1/models/{model}:predict"
            command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
            done = subprocess.run(
                [*command, "-s", str(BENCH / "post.lua"), url],
                env={**os.environ, "BENCH_BODY": str(body)},
                capture_output=True,
                text=True,
                check=True,
                timeout=seconds + 30,
            )
            line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT"))
            values = {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}
            rps = values["requests"] / (values["duration_us"] / 1e6)
            errors = sum(values[k] for k in ("connect", "read", "write", "status", "timeout"))
            load = f"{model} {rows} rows, {connections} conn"
            print(f"{load:<28} {name:<16} {rps:>8.0f} {rps * rows:>9.0f} {values['p50_us'] / 1e3:>7.2f} {errors:>6}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk seconds per load")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    repository, how = prepare_model(results)
    prepare_cnn(repository, results)
    print(f"models: {', '.join(MODELS)} ({how}); load average {os.getloadavg()}")
    wrk = ensure_wrk()
    servers = build(repository, results)
    with started(list(servers.values())):
        agreement(servers)
        if not args.skip_cost:
            cost(servers, wrk, args.seconds, results)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
