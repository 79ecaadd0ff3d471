"""wrk, the load generator of the benchmarks: found or installed, run against one URL with a fixed body
(post.lua), and its result line parsed into a `Load`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from servers import MODEL, ROOT

BENCH = ROOT / "bench"


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package when missing and we may (root with apt-get)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's package (apt-get install -y wrk) ...", flush=True)
        quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode != 0:  # type: ignore[call-overload]
            subprocess.run(["apt-get", "update"], check=False, **quiet)  # type: ignore[call-overload]
            subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet)  # type: ignore[call-overload]
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("bench: wrk is required: install it with `sudo apt-get install -y wrk` (Debian/Ubuntu)")


@dataclass
class Load:
    connections: int
    rows: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    cpu_ms_per_request: float = 0.0
    p999_ms: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


_RESULT = re.compile(r"BENCH_RESULT (.*)")


def run_wrk(
    wrk: str,
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    rows: int,
    model: str = MODEL,
    target: str | None = None,
    headers: dict[str, str] | None = None,
) -> Load:
    """`target`: the full URL to POST to (another server's route); default our V1 predict route of `model`.
    `headers`: sent with every request (Content-Type among them replaces application/json)."""
    extra = dict(headers or {})
    content_type = extra.pop("Content-Type", "application/json")
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(BENCH / "post.lua")]
    done = subprocess.run(
        [*command, target or f"{url}/v1/models/{model}:predict"],
        env={
            **os.environ,
            "BENCH_BODY": str(body),
            "BENCH_CONTENT_TYPE": content_type,
            "BENCH_HEADERS": "|".join(f"{name}: {value}" for name, value in extra.items()),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 30,
    )
    match = _RESULT.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    values = {key: int(value) for key, value in (item.split("=") for item in match.group(1).split())}
    errors = {key: values[key] for key in ("connect", "read", "write", "status", "timeout")}
    return Load(
        connections, rows, values["requests"], values["duration_us"] / 1e6, values["p50_us"] / 1e3,
        values["p99_us"] / 1e3, errors, p999_ms=values["p999_us"] / 1e3,
    )  # fmt: skip
