"""The executor factory: device and dtype resolution, the implementation chosen, the per-device default C, the
bench's injected executor; and the GPU executor (skipped with a reason where torch has no CUDA)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checkpoints import TINY_MLP, write_checkpoint
from torch import nn

from models import load_checkpoint
from service.engine.executor import EagerExecutor, TracedCpuExecutor
from service.engine.executor_factory import PlacementError, build_executor, resolve_placement
from service.engine.types import Executor
from service.engine.variable_shape import VariableShapeExecutor, variable_shape
from service.guarantee.selftest import run_self_test
from service.guarantee.verify import ModelRefused, check_inference_mode
from service.http.app import create_app
from service.lifecycle.loader import ServedModel
from service.lifecycle.registry import ModelRegistry
from service.observability.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(NO_CUDA, reason="torch.cuda.is_available() is false (CPU build or no GPU)")
cpu_only = pytest.mark.skipif(not NO_CUDA, reason="checks CPU-only behaviour; this machine has CUDA")


class TraceRefusingModel(nn.Module):
    """A correct model that cannot be traced (it raises while being traced), so the factory falls back."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]
            raise RuntimeError("data-dependent control flow")
        return self.linear(x)


class BatchStatsNorm(nn.BatchNorm1d):
    """A BatchNorm that normalizes with batch statistics even in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)


def settings(repository: Path = Path("unused"), **overrides: object) -> Settings:
    return Settings(repository=repository, **overrides)  # type: ignore[arg-type]


@cpu_only
def test_auto_device_resolves_to_cpu_without_cuda() -> None:
    placement = resolve_placement("auto", "float32")
    assert (placement.device, placement.dtype) == ("cpu", "float32")


@cpu_only
def test_cuda_without_a_gpu_is_refused_with_the_reason() -> None:
    with pytest.raises(PlacementError, match=r"device 'cuda' requested but torch.cuda.is_available\(\) is false"):
        resolve_placement("cuda", "float32")


@pytest.mark.parametrize("device", ["cpu", *(["auto"] if NO_CUDA else [])])
def test_bfloat16_on_cpu_is_refused_with_a_clear_error(device: str) -> None:
    with pytest.raises(PlacementError, match="dtype 'bfloat16' needs device 'cuda' \\(device resolved to 'cpu'\\)"):
        resolve_placement(device, "bfloat16")
    with pytest.raises(PlacementError, match="dtype 'bfloat16' needs device 'cuda'"):
        create_app(settings(device=device, dtype="bfloat16"))


def test_the_cli_refuses_bfloat16_on_cpu_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--repository", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("invariant-serve: error: dtype 'bfloat16' needs device")


def test_the_factory_traces_on_cpu_with_the_device_default_chunk(tmp_path: Path) -> None:
    model, manifest = load_checkpoint(write_checkpoint(tmp_path, "tiny"))
    executor = build_executor(model, manifest, settings(device="cpu"))
    assert isinstance(executor, TracedCpuExecutor)
    assert executor.describe() == {"executor": "traced-cpu", "device": "cpu", "dtype": "float32", "chunk_rows": 32}
    assert build_executor(model, manifest, settings(device="cpu", chunk_rows=5)).chunk_rows == 5


def test_an_untraceable_model_falls_back_to_eager_and_passes_its_self_test(tmp_path: Path) -> None:
    _, manifest = load_checkpoint(write_checkpoint(tmp_path, "tiny"))
    executor = build_executor(TraceRefusingModel(), manifest, settings(device="cpu", chunk_rows=4))
    assert type(executor) is EagerExecutor
    assert run_self_test(executor).passed


def test_no_setting_lets_a_model_serve_without_the_fixed_shape() -> None:
    assert "unsafe_variable_shape" not in Settings.model_fields


def test_the_injected_executor_serves_after_the_real_one_passed_the_self_test(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, "tiny", TINY_MLP)
    control = settings(tmp_path, device="cpu", chunk_rows=4, model_control="none")
    registry = ModelRegistry(control, Metrics(), variable_shape)

    async def serve() -> ServedModel:
        await registry.start()
        try:
            return registry.get_ready("tiny")
        finally:
            await registry.close()

    served = asyncio.run(serve())
    assert served.self_test.passed
    assert isinstance(served.batcher.executor, VariableShapeExecutor)  # what the bench serves through
    assert served.execution["executor"] == "variable-shape (bench only)"  # and the metadata says so


def test_inference_mode_checks_run_in_bfloat16(tmp_path: Path) -> None:
    """The BatchNorm formula check's tolerance follows the dtype (bf16 math runs on CPU too; only serving
    in bf16 is cuda-only)."""
    model, _ = load_checkpoint(write_checkpoint(tmp_path, "tiny"))
    check_inference_mode(model.eval().to(torch.bfloat16), (16,), "cpu", "bfloat16")
    norm = BatchStatsNorm(4)
    with torch.no_grad():
        norm.running_mean.fill_(5.0)  # type: ignore[union-attr]
        norm.num_batches_tracked.fill_(1)  # type: ignore[union-attr]
    batch_dependent = nn.Sequential(nn.Linear(16, 4), norm).eval().to(torch.bfloat16)
    with pytest.raises(ModelRefused, match="'1' output differs from the running-statistics formula"):
        check_inference_mode(batch_dependent, (16,), "cpu", "bfloat16")


# ------------------------------------------------------------------------------------------------- GPU


def gpu_executor(tmp_path: Path, dtype: str, chunk_rows: int = 16) -> Executor:
    model, manifest = load_checkpoint(write_checkpoint(tmp_path, "tiny"))
    return build_executor(model, manifest, settings(device="cuda", dtype=dtype, chunk_rows=chunk_rows))


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graph_executor_passes_its_self_test_and_matches_eager(tmp_path: Path, dtype: str) -> None:
    from service.engine.executor_cuda import CudaGraphExecutor

    executor = gpu_executor(tmp_path, dtype)
    assert isinstance(executor, CudaGraphExecutor)
    assert executor.describe()["dtype"] == dtype
    check_inference_mode(executor.model, executor.input_shape, executor.device, executor.dtype)
    assert run_self_test(executor).passed
    eager = EagerExecutor(executor.model, executor.input_shape, executor.num_classes, 16, "cuda", dtype)
    rows = np.random.default_rng(0).standard_normal((37, 16)).astype(np.float32)
    assert executor.run(rows).bitwise_equal(eager.run(rows))


@needs_cuda
def test_auto_device_resolves_to_cuda_with_a_gpu() -> None:
    assert resolve_placement("auto", "bfloat16").device == "cuda"
