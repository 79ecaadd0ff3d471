"""Memory across load/unload cycles (issue 8): RSS of an explicit-mode server after each of N unload+load
cycles of one version, through the repository API. A leak of the model (here ~4 MB of weights, plus its
traced graph and executor buffers) per cycle would show as steady growth.

    .venv/bin/python bench/rss_cycles.py [--cycles 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from servers import PYTHON, Server

MODEL = "wide"


def write_wide_model(repository: Path) -> int:
    """64 -> 1024 -> 1024 -> 10 MLP with BatchNorm statistics (about 1.1 M float32 weights); returns its size."""
    import torch

    from models import InputSpec, Manifest, MLPConfig, build_model, save_checkpoint

    config = MLPConfig(in_features=64, num_classes=10, hidden=(1024, 1024), norm="batch", dropout=0.0)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 64))
    manifest = Manifest(
        name=MODEL,
        version=0,
        architecture=config,
        input=InputSpec(shape=(64,), feature_names=()),
        class_labels=tuple(str(i) for i in range(10)),
    )
    path = save_checkpoint(repository, model, manifest)
    return (path / "model.safetensors").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rss-cycles-") as scratch:
        work = Path(scratch)
        weights = write_wide_model(work / "repository")
        command = [PYTHON, "-m", "service", "--repository", str(work / "repository"), "--model-control", "explicit"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
        server = Server("rss", command, env, work / "server.log")
        server.launch()
        server.wait_ready()
        rss: list[float] = []
        seconds: list[float] = []
        try:
            with httpx.Client(base_url=server.url, timeout=300) as http:
                started_rss = server.rss_mb()[0]
                for _ in range(args.cycles):
                    began = time.monotonic()
                    for action in ("unload", "load"):
                        answer = http.post(f"/v2/repository/models/{MODEL}/{action}")
                        if answer.status_code != 200:
                            raise SystemExit(f"{action} failed: {answer.status_code} {answer.text}")
                    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
                    assert http.post(f"/v2/models/{MODEL}/infer", json=body).status_code == 200
                    seconds.append(time.monotonic() - began)
                    rss.append(server.rss_mb()[0])
        finally:
            server.stop()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\n## RSS over {args.cycles} unload+load cycles ({weights / 2**20:.1f} MB of weights; load average {load})")
    print("| cycle | RSS (MB) | vs cycle 1 | cycle time (s) |\n|---|---|---|---|")
    print(f"| start | {started_rss:.1f} | | |")
    for cycle, (value, took) in enumerate(zip(rss, seconds, strict=True), start=1):
        if cycle in (1, 2, 3, 5, 10, 15) or cycle == len(rss):
            print(f"| {cycle} | {value:.1f} | {100 * (value / rss[0] - 1):+.1f}% | {took:.2f} |")
    growth = 100 * (rss[-1] / rss[0] - 1)
    verdict = "within" if abs(growth) <= 10 else "OUTSIDE"
    print(f"\nRSS after cycle {len(rss)} vs after cycle 1: {growth:+.1f}% ({verdict} the 10% bound)")


if __name__ == "__main__":
    main()
