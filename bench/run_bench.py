"""The benchmark of issue 4: our server against two baselines, driven by wrk, in one run.

    python bench/run_bench.py            # what `make bench` runs (about 2-3 minutes)
    python bench/run_bench.py --help     # knobs for tuning runs (workers, C, queue delay, durations)

Steps: train the digits MLP once (cached under bench/results/, which git ignores), then for each server
start it on a free 127.0.0.1 port in its own process group, wait for readiness, check one answer, warm up,
measure 1 and 64 connections with `wrk -t1`, read the RSS of its processes from /proc, and stop it. Prints
one table, the scaling table for our server (1, 8, 64 rows per request) and the issue's targets as
PASS/FAIL lines. Exit status 1 when a run had socket errors or non-2xx answers (a fast error is no success).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from servers import HOST, MODEL, PYTHON, ROOT, Server, running
from wrk import BENCH, Load, ensure_wrk, run_wrk

TRAIN_ARGS = [
    "--data", "digits", "--arch", "mlp", "--hidden", "256,256", "--norm", "batch", "--dropout", "0.2",
    "--weight-decay", "5e-4", "--epochs", "20", "--name", MODEL,
]  # fmt: skip


# ---------------------------------------------------------------------------------------------- tools


def prepare_model(results: Path) -> tuple[Path, str]:
    """A model repository holding the digits MLP, trained once by the real training command and reused."""
    repository = results / "model-repository"
    from models import list_versions

    if list_versions(repository, MODEL):
        return repository, "trained by `python -m training`, cached"
    command = [PYTHON, "-m", "training", *TRAIN_ARGS, "--repository", str(repository)]
    print("training the bench model:", " ".join(command[1:]), flush=True)
    log = results / "training.log"
    with log.open("wb") as out:
        done = subprocess.run(command, cwd=ROOT, check=False, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode == 0 and list_versions(repository, MODEL):
        return repository, "trained by `python -m training` just now"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
    print(f"WARNING: training failed ({done.returncode}), see {log}:\n{tail}", file=sys.stderr)
    print("WARNING: using an INTERIM model of the same shape (timings match; predictions are not trained)")
    return _interim_model(results / "interim-repository"), "INTERIM: untrained, training command failed"


def _interim_model(repository: Path) -> Path:
    """Same architecture, standardization and BN statistics fitted on digits, no training: timings match."""
    import torch
    from sklearn.datasets import load_digits

    from models import InputSpec, Manifest, MLPConfig, build_model, list_versions, save_checkpoint

    if list_versions(repository, MODEL):
        return repository
    config = MLPConfig(in_features=64, num_classes=10, hidden=(256, 256), norm="batch", dropout=0.2)
    torch.manual_seed(0)
    model = build_model(config)
    data = torch.tensor(load_digits().data, dtype=torch.float32)
    state = {"standardize.mean": data.mean(0), "standardize.std": data.std(0).clamp_min(1e-3)}
    model.load_state_dict(state, strict=False)
    model.train()
    with torch.no_grad():
        for start in range(0, data.shape[0], 64):
            model(data[start : start + 64])
    manifest = Manifest(
        name=MODEL,
        version=0,
        architecture=config,
        input=InputSpec(shape=(64,), feature_names=tuple(f"pixel_{i}" for i in range(64))),
        class_labels=tuple(str(i) for i in range(10)),
        training={"source": "bench interim"},
    )
    save_checkpoint(repository, model, manifest)
    return repository


def write_bodies(results: Path) -> dict[int, Path]:
    """V1 bodies of 1, 8 and 64 real digits rows."""
    from sklearn.datasets import load_digits

    data = load_digits().data.tolist()
    bodies: dict[int, Path] = {}
    for rows in (1, 8, 64):
        path = results / f"body-{rows}.json"
        path.write_text(json.dumps({"instances": data[:rows]}))
        bodies[rows] = path
    return bodies


def build_servers(args: argparse.Namespace, repository: Path, results: Path) -> dict[str, Server]:
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("INVARIANT_")}
    base_env["PYTHONUNBUFFERED"] = "1"
    flags = ["--repository", str(repository), "--host", HOST, "--log-level", "info"]
    for flag in ("workers", "chunk_rows", "threads", "max_queue_delay_ms", "audit_fraction"):
        value = getattr(args, flag)
        if value is not None:
            flags += ["--" + flag.replace("_", "-"), str(value)]
    ours = [PYTHON, "-m", "service", *flags]
    uvicorn = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH), "--host", HOST, "--loop", "uvloop"]
    uvicorn += ["--http", "httptools", "--no-access-log", "--log-level", "info"]
    baseline_env = {**base_env, "BENCH_REPOSITORY": str(repository), "BENCH_MODEL": MODEL}
    workers = args.ceiling_workers
    servers = {
        "ours": Server("ours", ours, base_env, results / "ours.log", processes=workers),
        "ours-unsafe": Server(
            "ours-unsafe",
            [PYTHON, str(BENCH / "variable_shape.py"), *flags],  # same flags, variable-shape executor
            base_env,
            results / "unsafe.log",
            processes=workers,
        ),
        "plain": Server("plain", [*uvicorn, "--workers", "1", "baseline_plain:app"], baseline_env, results / "a.log"),
        "bare": Server(
            "bare",
            [*uvicorn, "--workers", str(workers), "baseline_bare:app"],
            baseline_env,
            results / "c.log",
            processes=workers,
        ),
        "ceiling": Server(
            "ceiling",
            [*uvicorn, "--workers", str(workers), "baseline_ceiling:app"],
            baseline_env,
            results / "b.log",
            processes=workers,
        ),
    }
    if args.candidate is not None:  # A/B: the same flags, the service/ of another checkout
        servers["candidate"] = Server(
            "candidate",
            ours,
            base_env,
            results / "candidate.log",
            cwd=args.candidate,
            processes=workers,
        )
    return {name: servers[name] for name in [*args.only, *(["candidate"] if args.candidate else [])]}


@dataclass
class Result:
    name: str
    c1: Load
    c64: Load
    rss_total_mb: float
    rss_worker_mb: float
    scaling: dict[int, Load] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # over every run against this server, warm-up too

    def count(self, load: Load) -> None:
        for key, count in load.errors.items():
            if count:
                self.failures[key] = self.failures.get(key, 0) + count


def check_answer(server: Server, body: Path) -> None:
    status, answer = server.post(body.read_bytes())
    if status != 200:
        raise RuntimeError(f"{server.name}: a single request answered {status}: {answer}")
    if server.name != "ceiling" and not answer.get("predictions", [{}])[0].get("label"):
        raise RuntimeError(f"{server.name}: answer without a label: {answer}")


def measure(servers: list[Server], wrk: str, bodies: dict[int, Path], args: argparse.Namespace) -> dict[str, Result]:
    """Rounds of interleaved runs (c=1 for every server, then c=64 for every server); each server's best
    round counts. Other work on the machine only ever slows a run down, and interleaving spreads it fairly."""
    every: dict[str, list[Load]] = {server.name: [] for server in servers}
    for server in servers:
        check_answer(server, bodies[1])
        every[server.name].append(run_wrk(wrk, server.url, bodies[1], 64, args.warmup, 1))
    best: dict[tuple[str, int], Load] = {}
    for round_index in range(args.rounds):
        for connections in (1, 64):
            for server in servers:
                cpu = server.cpu_seconds()
                load = run_wrk(wrk, server.url, bodies[1], connections, args.duration, 1)
                load.cpu_ms_per_request = (server.cpu_seconds() - cpu) * 1000 / max(load.requests, 1)
                every[server.name].append(load)
                key = (server.name, connections)
                if key not in best or load.rps > best[key].rps:
                    best[key] = load
                print(
                    f"  round {round_index + 1} c={connections:<2} {server.name:<12} {load.rps:>7.0f} req/s "
                    f"p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms",
                    flush=True,
                )
    results: dict[str, Result] = {}
    for server in servers:
        rss_total, rss_worker = server.rss_mb()
        result = Result(server.name, best[server.name, 1], best[server.name, 64], rss_total, rss_worker)
        for load in every[server.name]:
            result.count(load)
        results[server.name] = result
    ours = next((server for server in servers if server.name == "ours"), None)
    if ours is not None and args.scaling:
        scaling = results["ours"].scaling
        scaling[1] = results["ours"].c64
        for rows in (8, 64):
            scaling[rows] = run_wrk(wrk, ours.url, bodies[rows], 64, args.duration, rows)
            results["ours"].count(scaling[rows])
            print(f"  scaling {rows} rows/request: {scaling[rows].rps:.0f} req/s", flush=True)
    return results


# --------------------------------------------------------------------------------------------- report

LABELS = {
    "ours": "invariant-serve (fixed shape)",
    "ours-unsafe": "invariant-serve, variable shape (bench)",
    "plain": "(a) plain FastAPI + pydantic",
    "ceiling": "(b) FastAPI + orjson, constant",
    "bare": "(c) bare ASGI + orjson, constant",
}
CANDIDATE_LABEL = "candidate (--candidate checkout)"


def print_tables(results: dict[str, Result]) -> None:
    header = f"| {'server':<40} | {'c=1 req/s':>9} | {'c=1 p50 ms':>10} | {'c=64 req/s':>10} | {'c=64 p99 ms':>11} "
    header += f"| {'RSS MB':>6} | {'CPU ms/req':>10} | {'errors':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(cell) - 0) for cell in header.split("|")[1:-1]) + "|")
    for name, r in results.items():
        errors = sum(r.failures.values())
        print(
            f"| {LABELS.get(name, CANDIDATE_LABEL):<40} | {r.c1.rps:>9.0f} | {r.c1.p50_ms:>10.2f} | {r.c64.rps:>10.0f} "
            f"| {r.c64.p99_ms:>11.2f} | {r.rss_total_mb:>6.0f} | {r.c64.cpu_ms_per_request:>10.3f} | {errors:>6} |"
        )
    ours = results.get("ours")
    if ours and ours.scaling:
        print()
        print(f"| {'rows/request (c=64)':<19} | {'req/s':>8} | {'rows/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} |")
        print(f"|{'-' * 21}|{'-' * 10}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
        for rows, load in ours.scaling.items():
            print(
                f"| {rows:<19} | {load.rps:>8.0f} | {load.rps * rows:>8.0f} | {load.p50_ms:>7.2f} "
                f"| {load.p99_ms:>7.2f} |"
            )


def check_targets(results: dict[str, Result], subject: str = "ours") -> list[tuple[bool, str]]:
    """The issue's targets for `subject` ("ours", or "candidate" in an A/B run)."""
    checks: list[tuple[bool, str]] = []
    ours, unsafe = results.get(subject), results.get("ours-unsafe")
    plain, ceiling, bare = results.get("plain"), results.get("ceiling"), results.get("bare")
    if ours is None:
        return checks
    if bare:  # issue 27: Python per request is the limit; the bare ASGI server is what is left to win
        ratio = ours.c64.rps / bare.c64.rps
        checks.append((ratio >= 0.36, f"64 conns: {subject} = {ratio:.2f}x (c) bare ASGI (target >= 0.36x)"))
    if plain:
        ratio = ours.c64.rps / plain.c64.rps
        checks.append((ratio >= 5, f"64 conns: {subject} {ours.c64.rps:.0f} req/s = {ratio:.1f}x (a) (target >= 5x)"))
    if ceiling:
        ratio = ours.c64.rps / ceiling.c64.rps
        checks.append(
            (ratio >= 0.8, f"64 conns: {subject} = {ratio:.2f}x (b) {ceiling.c64.rps:.0f} req/s (target >= 0.8x)")
        )
    checks.append((ours.c64.p99_ms <= 10, f"64 conns: {subject} p99 {ours.c64.p99_ms:.2f} ms (target <= 10 ms)"))
    if plain:
        ratio = ours.c1.p50_ms / plain.c1.p50_ms
        checks.append(
            (ratio <= 0.7, f"1 conn: {subject} p50 {ours.c1.p50_ms:.3f} ms = {ratio:.2f}x (a) {plain.c1.p50_ms:.3f} ms"
             " (target <= 0.7x)")
        )  # fmt: skip
    if unsafe and subject == "ours":
        ratio = ours.c64.rps / unsafe.c64.rps
        checks.append(
            (ratio >= 0.9, f"cost of the guarantee: fixed shape = {ratio:.2f}x variable shape at 64 conns"
             " (target >= 0.9x)")
        )  # fmt: skip
    if plain:
        ratio = ours.rss_worker_mb / plain.rss_worker_mb
        checks.append(
            (ratio <= 1.2, f"memory: {subject} {ours.rss_worker_mb:.0f} MB per worker process = {ratio:.2f}x (a)"
             f" {plain.rss_worker_mb:.0f} MB (target <= 1.2x)")
        )  # fmt: skip
    return checks


def report_checks(results: dict[str, Result]) -> bool:
    """Prints the PASS/FAIL lines; False when any run had socket errors or non-2xx answers."""
    checks = check_targets(results)
    bad = {name: r.failures for name, r in results.items() if r.failures}
    checks.append((not bad, "no socket errors, timeouts or non-2xx answers" + (f": {bad}" if bad else "")))
    print()
    for passed, text in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    if "candidate" in results:
        print()
        for passed, text in check_targets(results, "candidate"):
            print(f"{'PASS' if passed else 'FAIL'}  {text}")
    return not bad


# ----------------------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured level (default 6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of 64-connection warm-up (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each server's best counts")
    parser.add_argument(
        "--only", nargs="+", choices=list(LABELS), default=list(LABELS), help="servers to run (default: all)"
    )
    parser.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the rows/request table")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="cache and logs (git-ignored)")
    parser.add_argument(
        "--candidate", type=Path, help="also run the service/ of this checkout (same flags), to A/B a change"
    )
    tuning = parser.add_argument_group("our server's settings (default: the server's own defaults)")
    tuning.add_argument("--workers", type=int, help="worker processes (also used for baseline (b))")
    tuning.add_argument("--chunk-rows", type=int)
    tuning.add_argument("--threads", type=int)
    tuning.add_argument("--max-queue-delay-ms", type=float)
    tuning.add_argument("--audit-fraction", type=float)
    return parser


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the servers like Ctrl-C does
    sys.path.insert(0, str(ROOT))
    from service.settings import Settings

    defaults = Settings.model_fields
    workers = args.workers if args.workers is not None else defaults["workers"].default
    args.ceiling_workers = workers
    results_dir: Path = args.results.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    wrk = ensure_wrk()
    repository, provenance = prepare_model(results_dir)
    bodies = write_bodies(results_dir)
    chunk = args.chunk_rows or "the device default"
    delay = args.max_queue_delay_ms if args.max_queue_delay_ms is not None else defaults["max_queue_delay_ms"].default
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"model: {MODEL} mlp 64-256-256-10, batch norm, dropout 0.2 ({provenance}) in {repository}")
    print(
        f"ours: workers={workers} C={chunk} max_queue_delay_ms={delay:g}; (b) workers={workers}; (a) workers=1; "
        f"wrk -t1, {args.duration:g} s per level after {args.warmup:g} s warm-up, "
        f"best of {args.rounds} interleaved rounds; one-row V1 bodies\n",
        flush=True,
    )
    load_before = os.getloadavg()[0]
    try:
        with running(list(build_servers(args, repository, results_dir).values())) as servers:
            print(f"servers ready: {', '.join(f'{s.name} :{s.port}' for s in servers)}", flush=True)
            results = measure(servers, wrk, bodies, args)
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    load_after = os.getloadavg()[0]
    print(f"\nload average (1 min) before/after: {load_before:.2f}/{load_after:.2f} on {os.cpu_count()} cores")
    print("RSS: all server processes after load; CPU ms/req: server CPU time per request at 64 connections\n")
    print_tables(results)
    clean = report_checks(results)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
