"""The examples at their default sizes: trained briefly, exported to ONNX (or a torch.export .pt2), packaged,
loaded by the server's loader at C = 32; prints the self-test, whether the served bits equal the artifact run
alone at C (onnxruntime, or the user's own torch.export.load), the .pt2 pre-check time and the ms per C-row
forward. `python bench/imported_models.py [--steps N] [--format onnx|pt2]` (one run, this machine)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import resnet_cnn
import tabular_mlp
import transformer_encoder
from export_common import export_onnx, export_pt2
from test_import_pt2 import alone_at_c as program_alone_at_c
from test_import_serving import alone_at_c, load

from models.package import main as package
from models.pt2_check import check_pt2
from service.lifecycle.loader import Verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    args = parser.parse_args()
    steps, pt2 = args.steps, args.format == "pt2"
    builds: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
        "tabular": lambda: tabular_mlp.build(steps=steps),
        "resnet": lambda: resnet_cnn.build(steps=steps),
        "encoder": lambda: transformer_encoder.build(steps=steps),
    }
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "repo"
        for name, build in builds.items():
            model, example = build()
            if pt2:
                exported = export_pt2(model, example, Path(scratch) / f"{name}.pt2")
                started = time.perf_counter()
                check_pt2(exported)
                checked = f"pre-check {(time.perf_counter() - started) * 1000:.0f} ms; "
            else:
                exported, checked = export_onnx(model, example, Path(scratch) / f"{name}.onnx", external_data=True), ""
            assert package(["--model", str(exported), "--name", name, "--repository", str(repository)]) == 0
            served = load(repository, name)
            assert isinstance(served, Verified), served
            rows = np.random.default_rng(1).standard_normal((16, *served.manifest.input.shape)).astype(np.float32)
            executor = served.executor
            alone = program_alone_at_c(exported, rows) if pt2 else alone_at_c(served.path, rows)
            same = executor.run(rows).logits.tobytes() == alone.astype(np.float32).tobytes()
            started = time.perf_counter()
            executor.run(rows[:1].repeat(32 * 20, axis=0))
            ms = (time.perf_counter() - started) * 1000 / 20
            test = f"self-test {served.self_test.summary()} in {served.self_test.seconds:.1f} s"
            print(f"{name} {args.format}: {checked}{test}; "
                  f"served == alone at C: {same}; {ms:.2f} ms per 32-row forward")  # fmt: skip


if __name__ == "__main__":
    main()
