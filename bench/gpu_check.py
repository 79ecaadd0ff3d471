"""GPU check of the executors and the guarantee (made for a CUDA machine; about 2-4 minutes; runs on CPU too).

    python bench/gpu_check.py [--device cuda] [--chunks 16,64,256] [--seconds 5]

Sections, each printed as a table and written together to bench/reports/gpu_check_<device>_<date>.txt:
1. Per model and C: one C-row forward replayed as a CUDA graph vs run eagerly (ms per chunk; on CPU the
   traced executor stands in for the graph), whether both give the same bits, and the self-test.
2. The invariance probe (service/guarantee/probe.py): cases where plain `model(batch)` changes the probe row's bits,
   and cases where the executor does, in float32 and (on cuda) bfloat16.
3. bfloat16 vs float32 accuracy of the trained digits demo model (all 1797 bundled digits).
4. HTTP at 64 connections, 64-row V1 requests: our server vs plain FastAPI, both on the device
   (bench/loadgen.py drives them: no wrk needed).
Exit status 1 when any bitwise check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch
from loadgen import run_load
from run_bench import prepare_model
from servers import HOST, PYTHON, ROOT, Server, running
from torch import nn

from models import ArchConfig, CNNConfig, MLPConfig, build_model, list_versions, load_checkpoint
from service.engine.executor import EagerExecutor
from service.engine.executor_factory import DEFAULT_CHUNK_ROWS, make_executor, resolve_placement
from service.engine.numerics import environment_report, pin_numerics
from service.engine.types import Executor, Float32Array
from service.guarantee.probe import run_probe
from service.guarantee.selftest import row_answers, run_self_test

BENCH = ROOT / "bench"
MODELS: dict[str, ArchConfig] = {
    "mlp 64-256-256-10": MLPConfig(64, 10, hidden=(256, 256), norm="batch", dropout=0.2),
    "mlp 784-1024-1024-10": MLPConfig(784, 10, hidden=(1024, 1024), norm="batch", dropout=0.2),
    "cnn 1x28x28 32,64": CNNConfig(1, 28, 28, 10, channels=(32, 64), norm="batch", dropout=0.2),
}


class Report:
    """Lines printed as they come and kept for the report file; bitwise checks counted."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed_checks: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, *columns: str) -> None:
        """A markdown table's header and separator."""
        self.say("| " + " | ".join(columns) + " |")
        self.say("|" + "|".join("-" * (len(column) + 2) for column in columns) + "|")

    def check(self, passed: bool, what: str) -> str:
        if not passed:
            self.failed_checks.append(what)
        return "yes" if passed else "NO"


def prepared(config: ArchConfig, device: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(config).to(device)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn((64, *config.input_shape), device=device) * 2 + 1)  # updates running stats
    return model.eval().requires_grad_(False)


def chunk_ms(executor: Executor, runs: int = 50) -> float:
    rows = np.random.default_rng(1).standard_normal((executor.chunk_rows, *executor.input_shape)).astype(np.float32)
    for _ in range(5):
        executor.run(rows)
    started = time.perf_counter()
    for _ in range(runs):
        executor.run(rows)
    return (time.perf_counter() - started) / runs * 1000


def section_chunks(report: Report, device: str, chunks: list[int]) -> None:
    report.say("1. one C-row forward: graph replay (traced on cpu) vs eager, float32")
    report.table(
        f"{'model':<22}", f"{'C':>4}", f"{'kind':<10}", f"{'fast ms':>8}", f"{'eager ms':>8}", "same bits", "self-test"
    )
    placement = resolve_placement(device, "float32")
    for label, config in MODELS.items():
        model = prepared(config, device)
        for chunk in chunks:
            fast = make_executor(model, config.input_shape, config.num_classes, chunk, placement)
            eager = EagerExecutor(model, config.input_shape, config.num_classes, chunk, device, "float32")
            rows = np.random.default_rng(2).standard_normal((2 * chunk + 1, *config.input_shape)).astype(np.float32)
            same = report.check(fast.run(rows).bitwise_equal(eager.run(rows)), f"{label} C={chunk}: fast == eager")
            test = run_self_test(fast)
            report.check(test.passed, f"{label} C={chunk}: self-test")
            report.say(
                f"| {label:<22} | {chunk:>4} | {fast.describe()['executor']:<10} | {chunk_ms(fast):>8.3f} "
                f"| {chunk_ms(eager):>8.3f} | {same:>9} | {test.summary()} |"
            )


def plain_answers(executor: Executor, rows: Float32Array) -> list[bytes]:
    return [row.tobytes() for row in executor.run_plain(rows)]


def executor_answers(executor: Executor, rows: Float32Array) -> list[bytes]:
    return row_answers(executor.run(rows))


def section_invariance(report: Report, device: str, chunk: int) -> None:
    report.say(f"\n2. invariance probe (C={chunk}): cases whose bits differ from the row alone")
    report.table(f"{'model':<22}", f"{'dtype':<8}", "plain model(batch)", f"{'executor':>10}", "self-test")
    dtypes = ["float32", "bfloat16"] if device == "cuda" else ["float32"]
    for label, config in MODELS.items():
        model = prepared(config, device)
        for dtype in dtypes:
            cast = copy.deepcopy(model).to(dtype=getattr(torch, dtype))
            placement = resolve_placement(device, dtype)
            executor = make_executor(cast, config.input_shape, config.num_classes, chunk, placement)
            shape = config.input_shape
            plain = run_probe(partial(plain_answers, executor), shape, chunk)
            fixed = run_probe(partial(executor_answers, executor), shape, chunk)
            report.check(fixed.failures == 0, f"{label} {dtype}: executor probe")
            test = run_self_test(executor)
            report.check(test.passed, f"{label} {dtype}: self-test")
            report.say(
                f"| {label:<22} | {dtype:<8} | {f'{plain.failures}/{plain.cases}':>18} "
                f"| {f'{fixed.failures}/{fixed.cases}':>10} | {test.summary()} |"
            )


def section_accuracy(report: Report, device: str, repository: Path) -> None:
    from sklearn.datasets import load_digits

    report.say("\n3. digits demo model: bfloat16 vs float32 (all 1797 bundled digits, train and validation rows)")
    if device != "cuda":
        report.say("   skipped: bfloat16 serves on cuda only")
        return
    model, manifest = load_checkpoint(repository / "digits" / str(max(list_versions(repository, "digits"))))
    digits = load_digits()
    rows = digits.data.astype(np.float32)
    truth = np.array([manifest.class_labels.index(str(t)) for t in digits.target])
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        cast = copy.deepcopy(model).eval().to(device=device, dtype=getattr(torch, dtype))
        executor = make_executor(cast, (64,), 10, DEFAULT_CHUNK_ROWS["cuda"], resolve_placement(device, dtype))
        outputs[dtype] = executor.run(rows)
    changed = int((outputs["float32"].class_index != outputs["bfloat16"].class_index).sum())
    logit_gap = float(np.abs(outputs["float32"].logits - outputs["bfloat16"].logits).max())
    for dtype, result in outputs.items():
        report.say(f"   {dtype:<8} accuracy {float((result.class_index == truth).mean()):.4f}")
    report.say(f"   labels that differ: {changed} of {len(rows)}; largest logit difference {logit_gap:.4g}")


def section_http(report: Report, device: str, repository: Path, seconds: float) -> None:
    report.say(f"\n4. HTTP on {device}: 64 connections, 64-row V1 requests, {seconds:g} s each, one process each")
    env = {key: value for key, value in os.environ.items() if not key.startswith("INVARIANT_")}
    env |= {"PYTHONUNBUFFERED": "1", "BENCH_REPOSITORY": str(repository), "BENCH_MODEL": "digits"}
    results = BENCH / "results"
    ours = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--device", device]
    plain = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH), "--host", HOST, "--loop", "uvloop", "--http"]
    plain += ["httptools", "--no-access-log", "baseline_plain:app"]
    servers = [
        Server("invariant-serve", ours, env, results / "gpu-ours.log"),
        Server("plain FastAPI", plain, {**env, "BENCH_DEVICE": device}, results / "gpu-plain.log"),
    ]
    from sklearn.datasets import load_digits

    body = json.dumps({"instances": load_digits().data[:64].tolist()}).encode()
    report.table(
        f"{'server':<16}", f"{'req/s':>7}", f"{'rows/s':>8}", f"{'p50 ms':>7}", f"{'p99 ms':>7}", "non-200", "errors"
    )
    with running(servers):
        for server in servers:
            run_load(f"{server.url}/v1/models/digits:predict", body, 64, 1.0)  # warm-up
            load = run_load(f"{server.url}/v1/models/digits:predict", body, 64, seconds)
            bad = sum(count for status, count in load.statuses.items() if status != 200)
            report.say(
                f"| {server.name:<16} | {load.requests_per_second:>7.0f} | {load.requests_per_second * 64:>8.0f} "
                f"| {load.percentile_ms(0.5):>7.2f} | {load.percentile_ms(0.99):>7.2f} | {bad:>7} | {load.errors} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    # On CPU (a smoke run of the script) the GPU's C values would take minutes: a CNN self-test at C = 256 is
    # thousands of 256-row forwards.
    parser.add_argument("--chunks", help="C values of section 1 (default 16,64,256 on cuda, 4,16 on cpu)")
    parser.add_argument("--probe-chunk", type=int, help="C of section 2's probe (default 64 on cuda, 16 on cpu)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per HTTP level")
    parser.add_argument("--skip-http", action="store_true", help="sections 1-3 only")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    chunks = [int(c) for c in (args.chunks or ("16,64,256" if on_gpu else "4,16")).split(",")]
    probe_chunk = args.probe_chunk or (64 if on_gpu else 16)
    started = time.perf_counter()
    pin_numerics(1)
    report = Report()
    report.say(f"gpu_check {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {environment_report(args.device)}\n")
    (BENCH / "results").mkdir(exist_ok=True)
    repository, provenance = prepare_model(BENCH / "results")
    report.say(f"digits demo model: {provenance}\n")
    section_chunks(report, args.device, chunks)
    section_invariance(report, args.device, probe_chunk)
    section_accuracy(report, args.device, repository)
    if not args.skip_http:
        section_http(report, args.device, repository, args.seconds)
    verdict = "all bitwise checks pass" if not report.failed_checks else f"FAILED: {report.failed_checks}"
    report.say(f"\n{verdict}; {time.perf_counter() - started:.0f} s")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    path = BENCH / "reports" / f"gpu_check_{slug}_{datetime.now(UTC):%Y%m%d-%H%M}.txt"
    path.write_text("\n".join(report.lines) + "\n")
    print(f"report written to {path.relative_to(ROOT)}")
    return 1 if report.failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
