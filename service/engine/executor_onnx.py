"""Imported ONNX models: the pre-check (models/onnx_check.py), then onnxruntime behind the `Executor` protocol.

onnxruntime gets the checked bytes, never a path (so it opens no file), on the CPU provider with one intra-op
and one inter-op thread, sequential execution and one fixed graph-optimization level: its kernels, like
torch's, may pick another path for another batch size, so every forward runs at exactly C rows, zero-padded,
as every executor here does. The onnxruntime version and the optimization level join the executor's
description and so the numerics fingerprint and the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models import Manifest
from models.checkpoint import CheckpointError, check_sha256
from models.onnx_check import check_onnx
from service.engine.executor import ChunkedExecutor
from service.engine.executor_imported import check_signature, executors_at, open_imported, refusal_as_error
from service.engine.types import ChunkResult, Executor, Float32Array
from service.settings import Settings

# One fixed level, whatever the graph: ORT_ENABLE_ALL (fusions and NCHWc layouts for the CPU found). Measured
# on the ResNet-like example (width 16, C = 32, one thread, shared 2-core VM, one run): basic 106 ms, extended
# 88 ms, all 45 ms per forward. Its kernels follow the CPU, so the CPU model joins the fingerprint.
OPTIMIZATION_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
OPTIMIZATION_NAME = "all"


def session_for(model_bytes: bytes) -> ort.InferenceSession:
    """One onnxruntime session with the pinned options (CPU, 1 + 1 threads, sequential, fixed optimization)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVEL
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only: the server's log is for refusals, not ORT's notes
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait on a shared CPU
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """The session as a module at whatever batch it is given: `run_plain`'s control (the model on the whole
    batch, as other servers run it). (N, *input_shape) float32 -> logits (N, K) float32."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str) -> None:
        super().__init__()
        self.session, self.input_name, self.output_name = session, input_name, output_name

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        rows = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run([self.output_name], {self.input_name: rows})
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))


class OnnxExecutor(ChunkedExecutor):
    """onnxruntime at exactly C rows; softmax and argmax in torch on the (C, K) logits, as `Heads` does."""

    kind = "onnxruntime-cpu"

    def _prepare(self) -> None:
        if not isinstance(self.model, OnnxModule):
            raise TypeError("OnnxExecutor runs an OnnxModule")
        self._module: OnnxModule = self.model
        self._pad: Float32Array = np.zeros((self.chunk_rows, *self.input_shape), dtype=np.float32)  # (C, *shape)
        self._details = {**self._details, "onnxruntime": ort.__version__, "graph_optimization": OPTIMIZATION_NAME}

    def _forward(self, piece: Float32Array) -> ChunkResult:
        count = piece.shape[0]
        self._pad[:count] = piece  # rows are independent: pad rows only fill the shape
        self._pad[count:] = 0
        module = self._module
        (raw,) = module.session.run([module.output_name], {module.input_name: self._pad})
        logits = np.asarray(raw, dtype=np.float32)  # (C, K)
        if logits.shape != (self.chunk_rows, self.num_classes):
            raise ValueError(f"the model answered shape {list(logits.shape)}, expected [C, {self.num_classes}]")
        tensor = torch.from_numpy(logits)
        probabilities = torch.softmax(tensor, dim=1).numpy()
        index = torch.argmax(tensor, dim=1).numpy()
        return logits[:count], probabilities[:count], index[:count]


def load_onnx_executor(
    path: Path, manifest: Manifest, settings: Settings
) -> tuple[Callable[[int], Executor], Executor]:
    """An imported ONNX version directory, checked: build(C) -> its executor at C, and the preferred executor.
    Raises CheckpointError with the reason."""
    config, model_path = open_imported(path, manifest, settings, "onnx")
    checked = refusal_as_error(lambda: check_onnx(model_path))
    if checked.data_file != config.data_file:
        raise CheckpointError(f"the graph names external data {checked.data_file!r}, the manifest {config.data_file!r}")
    if checked.data_file:
        check_sha256(path / checked.data_file, config.data_sha256, checked.data_file)
    check_signature(checked.signature, config, manifest)
    try:
        session = session_for(checked.model_bytes)
    except Exception as exc:  # onnxruntime's own errors (shape or type inference): the graph is refused
        raise CheckpointError(f"onnxruntime cannot load the graph: {str(exc).splitlines()[0][:300]}") from None
    module = OnnxModule(session, checked.signature.input_name, checked.signature.output_name)
    shape, classes = manifest.input.shape, checked.signature.num_classes

    def make(chunk_rows: int, details: dict[str, Any] | None) -> Executor:
        return OnnxExecutor(module, shape, classes, chunk_rows, "cpu", "float32", details)

    return executors_at(make, settings)
