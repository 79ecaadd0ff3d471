"""Model lifecycle under load: the issue-8 measurements. Prints one table per scenario.

  poll:     a running server (poll mode, defaults) while the real training command writes v2, a garbage v3
            appears (valid manifest, corrupt weights) and v1's directory is deleted.
  explicit: load (a new v3), reload and unload through the repository API while clients keep sending.

16 closed-loop clients, 1..40-row V2 requests drawn from a fixed pool of digits rows. Every answered row is
compared bitwise with the solo answer of the version named in X-Model-Version.

    .venv/bin/python bench/lifecycle_bench.py [--scenario poll|explicit|both] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "tests"))  # swap_load: the tests' load clients

from servers import PYTHON, ROOT, Server
from swap_load import Answer, ClosedLoopClients, check, solo_answers

MODEL = "digits"
UNVERSIONED = f"/v2/models/{MODEL}/infer"
QUIET: dict[str, Any] = {"cwd": ROOT, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
TRAIN = ["--data", "digits", "--arch", "mlp", "--hidden", "256,256", "--norm", "batch", "--dropout", "0.2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["poll", "explicit", "both"], default="both")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-rows", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of each version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifecycle-") as scratch:
        work = Path(scratch)
        pool = digits_pool()
        if args.scenario in ("poll", "both"):
            poll_scenario(work / "poll", pool, args)
        if args.scenario in ("explicit", "both"):
            explicit_scenario(work / "explicit", pool, args)


def digits_pool(size: int = 64) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:size].astype(np.float32)  # (64, 64): the first 64 images, raw pixels


def train_command(repository: Path, seed: int, epochs: int) -> list[str]:
    command = [PYTHON, "-m", "training", *TRAIN, "--epochs", str(epochs), "--seed", str(seed)]
    return [*command, "--name", MODEL, "--repository", str(repository)]


def train(repository: Path, seed: int, epochs: int) -> None:
    """The real training command writes the next version of the model."""
    subprocess.run(train_command(repository, seed, epochs), check=True, **QUIET)


def write_garbage(repository: Path, source: Path, version: int) -> None:
    staging = repository / MODEL / f".staging-garbage-{version}"
    staging.mkdir()
    shutil.copy(source / "manifest.json", staging / "manifest.json")
    size = (source / "model.safetensors").stat().st_size
    (staging / "model.safetensors").write_bytes(os.urandom(size))
    os.rename(staging, repository / MODEL / str(version))


def start(repository: Path, work: Path, *flags: str) -> Server:
    command = [PYTHON, "-m", "service", "--repository", str(repository), *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    server = Server("lifecycle", command, env, work / "server.log")
    server.launch()
    server.wait_ready()
    return server


def wait_for(what: str, probe: Callable[[], bool], timeout_s: float = 300.0, poll_s: float = 0.02) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return time.monotonic()
        time.sleep(poll_s)
    raise SystemExit(f"timed out waiting for {what}")


def index(http: httpx.Client) -> dict[str, dict[str, str]]:
    return {e["version"]: e for e in http.post("/v2/repository/index").json() if e["name"] == MODEL}


def load_seconds(http: httpx.Client) -> float:
    """Sum of invariant_model_load_seconds so far (every load, ready or refused)."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f'invariant_model_load_seconds_sum{{model="{MODEL}"}}'):
            return float(line.split()[-1])
    return 0.0


def poll_scenario(work: Path, pool: np.ndarray, args: argparse.Namespace) -> None:
    repository = work / "repository"
    repository.mkdir(parents=True)
    train(repository, seed=1, epochs=args.epochs)
    server = start(repository, work)  # poll mode, poll interval 2 s, latest:2: the defaults
    clients = ClosedLoopClients(server.url, pool, [UNVERSIONED] * args.clients, args.max_rows)
    events: dict[str, float] = {}
    try:
        solo = {"1": solo_answers(server.url, MODEL, "1", pool)}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            clients.start()
            began = time.monotonic()
            wait_for("v1 answers", lambda: clients.count("1") >= 200)
            loads_before = load_seconds(http)
            training = subprocess.Popen(train_command(repository, seed=2, epochs=args.epochs), **QUIET)
            events["v2 published"] = wait_for("v2 directory", (repository / MODEL / "2").is_dir, poll_s=0.005)
            wait_for("v2 answers", lambda: clients.first_answer_from("2") is not None)
            training.wait()
            events["trained"] = time.monotonic() if training.returncode == 0 else float("nan")
            first = clients.first_answer_from("2")
            assert first is not None
            events["v2 first answer"] = first.done_at
            v2_load_s = load_seconds(http) - loads_before
            write_garbage(repository, repository / MODEL / "2", 3)
            events["v3 written"] = time.monotonic()
            events["v3 refused"] = wait_for(
                "v3 refused", lambda: index(http).get("3", {}).get("state") == "UNAVAILABLE"
            )
            v3 = index(http)["3"]
            shutil.rmtree(repository / MODEL / "1")
            events["v1 deleted"] = time.monotonic()
            events["v1 unloaded"] = wait_for("v1 unloaded", lambda: "1" not in index(http))
            after = clients.count("2")
            wait_for("more v2 answers", lambda: clients.count("2") >= after + 200)
            answers = clients.stop()
            ended = time.monotonic()
            solo["2"] = solo_answers(server.url, MODEL, "2", pool)
            final_index = index(http)
    finally:
        clients.stop()
        server.stop()
    result = check(answers, solo)
    print(f"\n## poll mode: {args.clients} clients, 1..{args.max_rows} rows, {ended - began:.1f} s, {uptime()}")
    print("| measure | value |\n|---|---|")
    rows = [
        ("requests answered", result.answers),
        ("failed requests (non-200 or no answer)", len(result.failures)),
        ("answers by X-Model-Version", dict(sorted(result.by_version.items()))),
        ("answers whose rows differ from that version's solo answers", len(result.mismatches)),
        ("answers from v3", result.by_version.get("3", 0)),
        ("v2 directory published -> first v2 answer (s)", f"{events['v2 first answer'] - events['v2 published']:.2f}"),
        (
            "training process exit -> first v2 answer (s; < 0: before it exited)",
            f"{events['v2 first answer'] - events['trained']:.2f}",
        ),
        ("  of which v2 load + verify + self-test (s, server metric)", f"{v2_load_s:.2f}"),
        ("  bound: poll interval + load (s)", f"{2.0 + v2_load_s:.2f}"),
        ("garbage v3 written -> UNAVAILABLE in index (s)", f"{events['v3 refused'] - events['v3 written']:.2f}"),
        ("v3 reason", v3["reason"][:90]),
        (
            "v1 deleted -> gone from index (drained, unloaded) (s)",
            f"{events['v1 unloaded'] - events['v1 deleted']:.2f}",
        ),
        ("final index", {v: e["state"] for v, e in final_index.items()}),
        ("latency p50 / p99 (ms)", latency(answers)),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    report_failures(result.failures)


def explicit_scenario(work: Path, pool: np.ndarray, args: argparse.Namespace) -> None:
    repository = work / "repository"
    repository.mkdir(parents=True)
    train(repository, seed=1, epochs=args.epochs)
    train(repository, seed=2, epochs=args.epochs)
    server = start(repository, work, "--model-control", "explicit")  # v1 and v2 load at start-up (latest:2)
    pinned = f"/v2/models/{MODEL}/versions/1/infer"
    paths = [pinned] * 4 + [UNVERSIONED] * (args.clients - 4)
    clients = ClosedLoopClients(server.url, pool, paths, args.max_rows)
    marks: dict[str, tuple[float, float]] = {}
    try:
        solo = {v: solo_answers(server.url, MODEL, v, pool) for v in ("1", "2")}
        with httpx.Client(base_url=server.url, timeout=300) as http:
            clients.start()
            began = time.monotonic()
            wait_for("answers", lambda: clients.count("2") >= 200)
            train(repository, seed=3, epochs=args.epochs)
            marks["load (v3 new, v1 displaced)"] = timed(lambda: http.post(f"/v2/repository/models/{MODEL}/load"))
            solo["3"] = solo_answers(server.url, MODEL, "3", pool)
            settle(clients, "3")
            marks["reload (v3, v2 reloaded)"] = timed(lambda: http.post(f"/v2/repository/models/{MODEL}/load"))
            settle(clients, "3")
            marks["unload (all versions)"] = timed(lambda: http.post(f"/v2/repository/models/{MODEL}/unload"))
            settle_failures(clients)
            answers = clients.stop()
            ended = time.monotonic()
    finally:
        clients.stop()
        server.stop()
    print(f"\n## explicit mode: {args.clients} clients ({len(paths) - 4} unversioned, 4 on version 1), ", end="")
    print(f"1..{args.max_rows} rows, {ended - began:.1f} s, {uptime()}")
    print("| phase | call answered (s) | requests | failed | failed on a version that stayed loaded |")
    print("|---|---|---|---|---|")
    load_start, load_end = marks["load (v3 new, v1 displaced)"]
    unload_start, unload_end = marks["unload (all versions)"]
    for phase, (start_at, end_at) in marks.items():
        during = [a for a in answers if a.done_at >= start_at and a.sent_at <= end_at]
        failed = [a for a in during if a.status != 200]
        wrong = [a for a in failed if stayed_loaded(a, load_start, unload_start)]
        print(f"| {phase} | {end_at - start_at:.2f} | {len(during)} | {len(failed)} | {len(wrong)} |")
    result = check(answers, solo)
    wrong = [a for a in result.failures if stayed_loaded(a, load_start, unload_start)]
    after_unload = [a for a in answers if a.sent_at > unload_end]
    refused_shape = {(a.status, a.body.startswith('{"error":')) for a in after_unload}
    v1_after = [a for a in answers if a.path.endswith("/versions/1/infer") and a.sent_at > load_end]
    print("\n| measure | value |\n|---|---|")
    for name, value in [
        ("requests", result.answers),
        ("answers by X-Model-Version", dict(sorted(result.by_version.items()))),
        ("answers whose rows differ from that version's solo answers", len(result.mismatches)),
        ("failed requests on versions that stayed loaded", len(wrong)),
        (
            "requests to v1 after it was displaced: count, (status, is {error}) seen",
            (len(v1_after), sorted({(a.status, a.body.startswith('{"error":')) for a in v1_after})),
        ),
        ("requests after unload: count, (status, is {error}) seen", (len(after_unload), sorted(refused_shape))),
        ("latency p50 / p99 (ms)", latency(answers)),
    ]:
        print(f"| {name} | {value} |")
    report_failures(wrong)


def stayed_loaded(answer: Answer, load_start: float, unload_start: float) -> bool:
    """Whether the version this request targeted was meant to serve for its whole life."""
    if answer.path.endswith("/versions/1/infer"):
        return answer.done_at < load_start  # v1 is displaced by the load
    return answer.done_at < unload_start  # unversioned: some version serves until the unload


def timed(call: Callable[[], httpx.Response]) -> tuple[float, float]:
    started = time.monotonic()
    response = call()
    if response.status_code != 200:
        raise SystemExit(f"repository call failed: {response.status_code} {response.text}")
    return started, time.monotonic()


def settle(clients: ClosedLoopClients, version: str) -> None:
    count = clients.count(version)
    wait_for(f"answers from {version}", lambda: clients.count(version) >= count + 200)


def settle_failures(clients: ClosedLoopClients) -> None:
    count = clients.count()
    wait_for("more requests", lambda: clients.count() >= count + 200)


def latency(answers: list[Answer]) -> str:
    seconds = np.array([a.done_at - a.sent_at for a in answers if a.status == 200])
    return f"{np.percentile(seconds, 50) * 1000:.1f} / {np.percentile(seconds, 99) * 1000:.1f}"


def report_failures(failures: list[Answer]) -> None:
    for failure in failures[:5]:
        print(f"  failed: {failure.path} status {failure.status}: {failure.body[:200]}")


def uptime() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
