"""GPU check of the fixed-shape guarantee (run on a CUDA machine; prints a table).

For each model and C: the start-up self-test on the GPU, and the design notes' probe: one row at
positions {0, mid, last} of batches of 25 sizes in 1..1000, compared bitwise with the row alone, for plain
`model(batch)` and for the fixed-shape executor. Also the eager per-chunk latency.

    python bench/gpu_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from models import ArchConfig, CNNConfig, MLPConfig, build_model
from service.executor import FixedShapeExecutor
from service.numerics import environment_report, pin_numerics
from service.selftest import run_self_test

SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 500, 1000)
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


def probe_counts(executor: FixedShapeExecutor, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(cases, plain differs, fixed differs) over SIZES x positions {0, mid, last}."""
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((1, *shape)).astype(np.float32)
    plain_alone = executor.run_plain(probe)[0].tobytes()
    fixed_alone = executor.run(probe).logits[0].tobytes()
    cases = plain_bad = fixed_bad = 0
    for size in SIZES:
        for position in sorted({0, size // 2, size - 1}):
            batch = rng.standard_normal((size, *shape)).astype(np.float32)
            batch[position] = probe[0]
            cases += 1
            plain_bad += executor.run_plain(batch)[position].tobytes() != plain_alone
            fixed_bad += executor.run(batch).logits[position].tobytes() != fixed_alone
    return cases, plain_bad, fixed_bad


def chunk_latency_ms(executor: FixedShapeExecutor, shape: tuple[int, ...]) -> float:
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
    header = f"{'model':<22} {'C':>4} {'self-test':>18} {'plain differs':>14} {'fixed differs':>14} {'chunk ms':>9}"
    print(header)
    print("-" * len(header))
    for label, config in MODELS.items():
        model = prepared(config, args.device)
        for chunk in map(int, args.chunks.split(",")):
            executor = FixedShapeExecutor(model, config.input_shape, config.num_classes, chunk, args.device)
            report = run_self_test(executor)
            cases, plain_bad, fixed_bad = probe_counts(executor, config.input_shape)
            status = f"{'pass' if report.passed else 'FAIL'} {report.cases - report.failures}/{report.cases}"
            print(
                f"{label:<22} {chunk:>4} {status:>18} {f'{plain_bad}/{cases}':>14} {f'{fixed_bad}/{cases}':>14} "
                f"{chunk_latency_ms(executor, config.input_shape):>9.3f}"
            )


if __name__ == "__main__":
    main()
