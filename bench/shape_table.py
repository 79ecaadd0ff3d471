"""Issue 19's table: does the start-up self-test pass at C, per instruction set and model, on this host?

    python bench/shape_table.py                      # digits MLP at C = 1..64, the others at a subset
    python bench/shape_table.py --full               # every model at C = 1..64 (slow: the CNN dominates)

Each instruction set runs in its own process with the caps set before torch is imported (native, AVX2,
SSE4.2, portable numerics), through the server's own executor factory and self-test. Models have the
architectures of the digits demo (64-256-256-10 MLP), a 784-1024-1024-10 MLP and the small CNN; weights are
seeded (the kernels a shape takes do not depend on the values). Prints one markdown table per model: 'P' the
self-test passed, 'F' it failed, at each C; and the C's that failed anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models import CNNConfig, MLPConfig

ROOT = Path(__file__).resolve().parent.parent
SUBSET = (1, 2, 4, 6, 8, 12, 16, 18, 24, 30, 31, 32, 33, 36, 42, 48, 56, 63, 64)
CAPS = {
    "native": {},
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4.2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "portable": {},  # filled from the server's own portable set in main()
}
MODELS = ("digits-mlp", "mlp-784-1024-1024", "cnn")


def model_configs() -> dict[str, MLPConfig | CNNConfig]:
    from models import CNNConfig, MLPConfig

    return {
        "digits-mlp": MLPConfig(in_features=64, num_classes=10, hidden=(256, 256), norm="batch", dropout=0.2),
        "mlp-784-1024-1024": MLPConfig(in_features=784, num_classes=10, hidden=(1024, 1024), norm="batch"),
        "cnn": CNNConfig(in_channels=1, height=8, width=8, num_classes=10, norm="batch"),
    }


def measure(models: list[str], chunks: dict[str, list[int]]) -> None:
    """In the capped process: one JSON line per (model, C)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoints import write_checkpoint

    from models import load_checkpoint
    from service.engine.executor_factory import build_executor
    from service.engine.numerics import pin_numerics
    from service.guarantee.selftest import run_self_test
    from service.settings import Settings

    pin_numerics(1)
    configs = model_configs()
    repository = Path(tempfile.mkdtemp(prefix="shape-table-"))
    for name in models:
        model, manifest = load_checkpoint(write_checkpoint(repository, name, configs[name]))
        model.eval()
        settings = Settings(repository=repository, device="cpu")
        for chunk_rows in chunks[name]:
            report = run_self_test(build_executor(model, manifest, settings, chunk_rows), 0)
            print(json.dumps({"model": name, "c": chunk_rows, "passed": report.passed}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every model at C = 1..64")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: run in the capped process
    args = parser.parse_args()
    full = list(range(1, 65))
    chunks = {m: full if (args.full or m == "digits-mlp") else list(SUBSET) for m in MODELS}
    if args.measure:
        measure(args.measure.split(","), chunks)
        return 0
    models = [m for m in MODELS if m in args.models.split(",")]
    from service.engine.numerics_env import PORTABLE_ENVIRONMENT

    CAPS["portable"] = dict(PORTABLE_ENVIRONMENT)
    results: dict[tuple[str, str, int], bool] = {}
    for isa, caps in CAPS.items():
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}, **caps}
        command = [sys.executable, __file__, "--measure", ",".join(models), *(["--full"] if args.full else [])]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=3600)
        for line in done.stdout.splitlines():
            row = json.loads(line)
            results[(isa, row["model"], row["c"])] = row["passed"]
        print(f"measured {isa}", file=sys.stderr, flush=True)
    for model in models:
        print(f"\n### {model}\n")
        print("| C | " + " | ".join(CAPS) + " |")
        print("|---|" + "---|" * len(CAPS))
        for chunk_rows in chunks[model]:
            cells = ["P" if results[(isa, model, chunk_rows)] else "F" for isa in CAPS]
            print(f"| {chunk_rows} | " + " | ".join(cells) + " |")
        failed = sorted({c for (isa, m, c), ok in results.items() if m == model and not ok})
        print(f"\nC's that failed under some instruction set: {failed or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
