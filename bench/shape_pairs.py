"""Issue 19's pair table: which C_small give every row the same bits as C = C_large, per instruction set and
model, on this host? (service/engine/pair.py serves a pair only where the start-up self-test proves this.)

    python bench/shape_pairs.py [--large 32]

Each instruction set runs in its own process with the caps set before torch is imported (native, AVX2,
SSE4.2, portable numerics), through the server's own executor factory: 64 seeded rows (x3 scale) each run
alone at C_small and alone at C_large, compared bitwise (the self-test at each C covers positions and
co-rows; this covers the two shapes against each other). Prints the C_small that agree per model and ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from shape_table import CAPS, MODELS, ROOT

SMALL = (1, 2, 3, 4, 6, 8, 12, 16, 24)


def measure(large: int) -> None:
    """In the capped process: one JSON line per model."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoints import write_checkpoint
    from shape_table import model_configs

    from models import load_checkpoint
    from service.engine.executor_factory import build_executor
    from service.engine.numerics import pin_numerics
    from service.settings import Settings

    pin_numerics(1)
    repository = Path(tempfile.mkdtemp(prefix="shape-pairs-"))
    for name, config in model_configs().items():
        model, manifest = load_checkpoint(write_checkpoint(repository, name, config))
        model.eval()
        settings = Settings(repository=repository, device="cpu")
        rows = np.random.default_rng(0).standard_normal((64, *manifest.input.shape)).astype(np.float32) * 3
        bits = {c: _alone(build_executor(model, manifest, settings, c), rows) for c in (large, *SMALL) if c <= large}
        agree = [small for small in SMALL if small < large and bits[small] == bits[large]]
        print(json.dumps({"model": name, "agree": agree}), flush=True)


def _alone(executor: Any, rows: Any) -> bytes:
    """Each row run alone (a lone chunk, zero-padded to the executor's C): the logits' bytes, concatenated."""
    return b"".join(executor.run(rows[i : i + 1]).logits.tobytes() for i in range(len(rows)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=32)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # internal: the capped process
    args = parser.parse_args()
    if args.measure:
        measure(args.large)
        return 0
    from service.engine.numerics_env import PORTABLE_ENVIRONMENT

    CAPS["portable"] = dict(PORTABLE_ENVIRONMENT)
    print("| model | " + " | ".join(CAPS) + " |")
    print("|---|" + "---|" * len(CAPS))
    found: dict[str, dict[str, list[int]]] = {}
    for isa, caps in CAPS.items():
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}, **caps}
        command = [sys.executable, __file__, "--measure", "--large", str(args.large)]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800)
        for line in done.stdout.splitlines():
            row = json.loads(line)
            found.setdefault(row["model"], {})[isa] = row["agree"]
    for model in MODELS:
        cells = [",".join(map(str, found[model][isa])) or "none" for isa in CAPS]
        print(f"| {model} | " + " | ".join(cells) + " |")
    print(f"\nC_small (of {list(SMALL)}) whose lone-row bits equal C = {args.large}'s, per instruction set.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
