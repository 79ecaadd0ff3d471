"""GPU check of the fixed-shape guarantee (run on a CUDA machine; prints a table).

For each model and C: the start-up self-test on the GPU (the one probe, service/probe.py, on the fixed-shape
executor), the same probe on plain `model(batch)` as the control (how many cases differ without the fixed
shape), and the eager per-chunk latency. The last line is the digest of the probe rows' answers, to compare
with another machine's (different CPUs or GPUs give different bits unless numerics are pinned).

    python bench/gpu_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from models import ArchConfig, CNNConfig, MLPConfig, build_model
from service.executor import Executor
from service.executor_factory import make_executor, resolve_placement
from service.numerics import environment_report, pin_numerics
from service.probe import ProbeReport, answers_digest, probe_rows, run_probe
from service.selftest import row_answers, run_self_test

MODELS: dict[str, ArchConfig] = {
    "mlp 64-256-256-10": MLPConfig(64, 10, hidden=(256, 256), norm="batch", dropout=0.2),
    "mlp 784-1024-1024-10": MLPConfig(784, 10, hidden=(1024, 1024), norm="batch", dropout=0.2),
    "cnn 1x28x28 32,64": CNNConfig(1, 28, 28, 10, channels=(32, 64), norm="batch", dropout=0.2),
}


def prepared(config: ArchConfig, device: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(config).to(device)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn((64, *config.input_shape), device=device) * 2 + 1)  # updates running stats
    return model.eval().requires_grad_(False)


def plain_probe(executor: Executor, shape: tuple[int, ...]) -> ProbeReport:
    """The probe on plain `model(batch)`: cases whose bits differ from the row alone."""
    return run_probe(lambda rows: [row.tobytes() for row in executor.run_plain(rows)], shape, executor.chunk_rows)


def chunk_latency_ms(executor: Executor, shape: tuple[int, ...]) -> float:
    rows = np.random.default_rng(1).standard_normal((executor.chunk_rows, *shape)).astype(np.float32)
    for _ in range(5):
        executor.run(rows)
    started = time.perf_counter()
    for _ in range(50):
        executor.run(rows)
    return (time.perf_counter() - started) / 50 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunks", default="16,64,256")
    args = parser.parse_args()
    pin_numerics(1)
    print(environment_report(args.device))
    header = f"{'model':<22} {'C':>4} {'self-test':>18} {'plain differs':>14} {'chunk ms':>9} {'answers digest':>16}"
    print(header)
    print("-" * len(header))
    for label, config in MODELS.items():
        model = prepared(config, args.device)
        for chunk in map(int, args.chunks.split(",")):
            placement = resolve_placement(args.device, "float32")
            executor = make_executor(model, config.input_shape, config.num_classes, chunk, placement)
            report = run_self_test(executor)
            plain = plain_probe(executor, config.input_shape)
            status = f"{'pass' if report.passed else 'FAIL'} {report.cases - report.failures}/{report.cases}"
            digest = answers_digest(row_answers(executor.run(probe_rows(config.input_shape, chunk + 1))))
            print(
                f"{label:<22} {chunk:>4} {status:>18} {f'{plain.failures}/{plain.cases}':>14} "
                f"{chunk_latency_ms(executor, config.input_shape):>9.3f} {digest:>16}"
            )


if __name__ == "__main__":
    main()
