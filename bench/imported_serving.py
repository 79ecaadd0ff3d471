"""Issue 21's serving table: each example (tabular MLP, ResNet-like CNN, transformer encoder) in ONNX and as a
torch.export .pt2, served by invariant-serve (C = 32) and by plain FastAPI running the same artifact
(baseline_plain_onnx.py, baseline_plain_pt2.py), one process each, one after the other.

    python bench/imported_serving.py [--seconds 8] [--steps 50] [--only tabular,resnet,encoder]

Per server: lone-request p50 (1 connection) and req/s at 64 connections, single-row V1 JSON, with wrk, and the
bytes of the first answer's logits from both servers side by side (ours must equal the artifact's own bits at
C; the plain server runs one row alone, which may differ in the last bits: that is the point of the server).
One run on a shared machine: read the columns side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from servers import HOST, PYTHON, ROOT, Server, running
from wrk import ensure_wrk, run_wrk

sys.path.insert(0, str(ROOT / "examples"))
import resnet_cnn
import tabular_mlp
import torch
import transformer_encoder
from export_common import export_onnx, export_pt2
from torch import nn

from models.package import main as package

BUILDS: dict[str, Callable[[int], tuple[nn.Module, torch.Tensor]]] = {
    "tabular": lambda steps: tabular_mlp.build(steps=steps),
    "resnet": lambda steps: resnet_cnn.build(steps=steps),
    "encoder": lambda steps: transformer_encoder.build(steps=steps),
}


def publish(name: str, fmt: str, steps: int, scratch: Path) -> tuple[Path, int]:
    """Train, export, package as `<name>-<fmt>`; the version directory and the flat row width."""
    model, example = BUILDS[name](steps)
    if fmt == "pt2":
        exported = export_pt2(model, example, scratch / f"{name}.pt2")
    else:
        exported = export_onnx(model, example, scratch / f"{name}.onnx")
    repository = scratch / "repository"
    served_name = f"{name}-{fmt}"
    assert package(["--model", str(exported), "--name", served_name, "--repository", str(repository)]) == 0
    (version,) = (repository / served_name).iterdir()
    return version, int(example[0].numel())


def servers(version: Path, fmt: str, results: Path) -> list[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    repository, label = version.parent.parent, version.parent.name
    ours = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--chunk-rows", "32"]
    ours += ["--no-access-log", "--workers", "1"]
    uvicorn = [PYTHON, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "--host", HOST, "--loop", "uvloop"]
    uvicorn += ["--http", "httptools", "--no-access-log", "--workers", "1", f"baseline_plain_{fmt}:app"]
    return [
        Server("invariant-serve", ours, env, results / f"{label}-ours.log"),
        Server("plain FastAPI", uvicorn, {**env, "BENCH_MODEL_DIR": str(version)}, results / f"{label}-plain.log"),
    ]


def first_logits(url: str, body: Path) -> list[float]:
    import urllib.request

    request = urllib.request.Request(url, body.read_bytes(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        logits: list[float] = json.loads(answer.read())["predictions"][0]["logits"]
    return logits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=50, help="training steps per example (the weights' values)")
    parser.add_argument("--only", default=",".join(BUILDS), help="comma-separated examples")
    parser.add_argument("--formats", default="onnx,pt2")
    args = parser.parse_args()
    wrk = ensure_wrk()
    results = Path(tempfile.mkdtemp(prefix="imported-serving-"))
    print("| example | format | server | c1 p50 ms | c64 req/s | c64 p99 ms | errors | logits[0] |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        for fmt in args.formats.split(","):
            version, width = publish(name, fmt, args.steps, results)
            body = results / f"{name}-{fmt}.json"
            body.write_text(json.dumps({"instances": [[0.25] * width]}))
            for server in servers(version, fmt, results):
                target = f"{{}}/v1/models/{version.parent.name}:predict"
                with running([server]):
                    url = target.format(server.url)
                    logits = first_logits(url, body)
                    run_wrk(wrk, server.url, body, 16, 2, 1, target=url)  # warm-up
                    lone = run_wrk(wrk, server.url, body, 1, args.seconds, 1, target=url)
                    many = run_wrk(wrk, server.url, body, 64, args.seconds, 1, target=url)
                print(
                    f"| {name} | {fmt} | {server.name} | {lone.p50_ms:.3f} | {many.rps:,.0f} | "
                    f"{many.p99_ms:.2f} | {lone.failed + many.failed} | {logits[0]!r} |",
                    flush=True,
                )
    print(f"\nlogs: {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
