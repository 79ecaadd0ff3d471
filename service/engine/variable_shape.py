"""The bench-only variable-shape executor: each chunk of queued rows runs as one forward on exactly those rows
(no padding), through the same traced module as the fixed-shape executor, so the cost comparison is like for
like. It breaks the guarantee (its self-test fails here), so no setting can select it: only code can
(bench/variable_shape.py hands its name to the server as a ServingExecutorFactory), to measure what the
guarantee costs."""

from __future__ import annotations

import numpy as np
import torch

from service.engine.executor import ChunkedExecutor, TracedCpuExecutor
from service.engine.types import ChunkResult, Executor, Float32Array


class VariableShapeExecutor(TracedCpuExecutor):
    """One forward per call on the rows as they come: the batch shape varies, and with it the kernels."""

    kind = "variable-shape (bench only)"

    def _step(self, count: int) -> int:
        return count

    def _forward(self, piece: Float32Array) -> ChunkResult:
        logits, probabilities, index = self._heads(torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)))
        return logits.numpy(), probabilities.numpy(), index.numpy()


def variable_shape(verified: Executor) -> Executor:
    """The executor the bench serves through, built from the one that passed the self-test."""
    if not isinstance(verified, ChunkedExecutor) or verified.device != "cpu":
        raise ValueError("the variable-shape bench executor wraps a torch executor on cpu only")
    return VariableShapeExecutor(
        verified.model, verified.input_shape, verified.num_classes, verified.chunk_rows, verified.device, verified.dtype
    )
