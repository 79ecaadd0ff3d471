"""What receipts cost: req/s and latency at 64 connections (wrk, one row per V1 predict of the digits MLP, C = 32,
one worker) with receipts off, asked per request (?receipts=true: each answer carries a signed receipt), and
always on with the log (--receipts always --receipts-log: every answer carries one and every one is logged).
One server process per mode, one measured run each after a short warm-up; 127.0.0.1 only, bounded in time.

    .venv/bin/python bench/receipts_bench.py [--seconds 10] [--results bench/results/receipts]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import urllib.request
from pathlib import Path

from hostile_load import digits_repository, server_for
from servers import MODEL, ROOT
from wrk import Load, ensure_wrk, run_wrk

CONNECTIONS = 64
WARM_UP_S = 3.0


def modes(results: Path) -> dict[str, tuple[tuple[str, ...], str]]:
    """mode -> (server flags, query string of the predict URL)."""
    keys = results / "receipt-keys"
    keys.write_text(secrets.token_urlsafe(32) + "\n")
    keys.chmod(0o600)  # the server refuses key files others can read
    log = results / "receipts-log"
    return {
        "off": ((), ""),
        "per request": (("--receipts-key-file", str(keys)), "?receipts=true"),
        "always + log": (("--receipts-key-file", str(keys), "--receipts", "always", "--receipts-log", str(log)), ""),
    }


def logged_receipts(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(r"^invariant_receipts_logged_total (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def measure(results: Path, seconds: float) -> list[tuple[str, Load, int]]:
    wrk = ensure_wrk()
    repository = digits_repository(ROOT, results)
    body = results / "body.json"
    body.write_text(json.dumps({"instances": [[float(i % 17) for i in range(64)]]}))
    measured = []
    for mode, (flags, query) in modes(results).items():
        server = server_for(ROOT, repository, results, *flags)
        server.log = results / f"server-{mode.replace(' ', '').replace('+', '-')}.log"
        server.launch()
        try:
            server.wait_ready()
            target = f"{server.url}/v1/models/{MODEL}:predict{query}"
            run_wrk(wrk, server.url, body, CONNECTIONS, WARM_UP_S, 1, target=target)
            load = run_wrk(wrk, server.url, body, CONNECTIONS, seconds, 1, target=target)
            total_logged = logged_receipts(server.url)
        finally:
            server.stop()
        measured.append((mode, load, total_logged))
    return measured


def table(measured: list[tuple[str, Load, int]]) -> str:
    lines = [
        "| receipts | req/s | p50 ms | p99 ms | errors | receipts logged (warm-up + run) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, load, logged in measured:
        shown = str(logged) if mode == "always + log" else "-"
        lines.append(f"| {mode} | {load.rps:.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.failed} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each measured run (default 10)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "receipts")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 120:
        raise SystemExit("--seconds: from 1 to 120")
    args.results.mkdir(parents=True, exist_ok=True)
    print(table(measure(args.results, args.seconds)))


if __name__ == "__main__":
    main()
