"""Does a thread's first forward give other bits than its later ones? Per model and C, on this machine.

    python bench/first_forward.py [--threads-per-case 5] [--chunks 1,2,4,8,16,32,64]

For each model (digits-shaped MLP 64-256-256-10, MLP 784-1024-1024-10, CNN 1x28x28 (32, 64); random weights with
BatchNorm statistics from random batches) and each C, builds the traced executor, answers a probe row on this
thread, then on N fresh threads, and counts the threads whose answer differs in any bit: first with the
executor's per-thread warm-up switched off (what the math libraries do), then with it on (what the service
serves). One torch thread, numerics pinned as the server pins them.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import service.engine.executor as executors
from models import ArchConfig, CNNConfig, MLPConfig, build_model
from service.engine.numerics import pin_numerics
from service.guarantee.probe import probe_rows
from service.guarantee.selftest import run_on_new_thread

MODELS: dict[str, ArchConfig] = {
    "mlp 64-256-256-10": MLPConfig(64, 10, hidden=(256, 256), norm="batch", dropout=0.2),
    "mlp 784-1024-1024-10": MLPConfig(784, 10, hidden=(1024, 1024), norm="batch", dropout=0.2),
    "cnn 1x28x28 (32, 64)": CNNConfig(1, 28, 28, 10, channels=(32, 64), norm="batch", dropout=0.2),
}


def random_model(config: ArchConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(config).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn((64, *config.input_shape)) * 2 + 1)  # train mode: running statistics
    return model.eval()


def threads_that_differ(executor: executors.ChunkedExecutor, row: np.ndarray, threads: int) -> int:
    """(1, *input_shape) row: how many of `threads` fresh threads answer it with other bits than this one."""
    here = executor.run(row).logits.tobytes()
    return sum(run_on_new_thread(executor, row).logits.tobytes() != here for _ in range(threads))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads-per-case", type=int, default=5, help="fresh threads per (model, C)")
    parser.add_argument("--chunks", default="1,2,4,8,16,32,64", help="comma-separated C values")
    args = parser.parse_args()
    pin_numerics(1)
    chunks = [int(c) for c in args.chunks.split(",")]
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, 1 thread")
    print(f"fresh threads (of {args.threads_per_case}) answering other bits than this one: no warm-up / warm-up\n")
    print(f"| {'model':<22} | " + " | ".join(f"C={c:<5}" for c in chunks) + " |")
    print(f"|{'-' * 24}|" + "|".join("-" * 9 for _ in chunks) + "|")
    default_warmup = executors.WARMUP_FORWARDS
    for name, config in MODELS.items():
        model, row = random_model(config), probe_rows(config.input_shape, 1, 0)
        cells = []
        for chunk_rows in chunks:
            counts = []
            for warmup in (0, default_warmup):
                executors.WARMUP_FORWARDS = warmup
                executor = executors.TracedCpuExecutor(model, config.input_shape, config.num_classes, chunk_rows)
                counts.append(threads_that_differ(executor, row, args.threads_per_case))
            cells.append(f"{counts[0]} / {counts[1]}")
        executors.WARMUP_FORWARDS = default_warmup
        print(f"| {name:<22} | " + " | ".join(f"{cell:<7}" for cell in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
