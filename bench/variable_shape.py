"""Bench only: our server with plain variable-shape batches, to measure what the fixed shape costs.

Each chunk of queued rows runs as one forward on exactly those rows (no padding), through the same traced
module as the fixed-shape executor, so the comparison is like for like. It breaks the guarantee, so it is
not a setting: this script builds the app with an executor factory. The model still has to pass its
self-test with the real fixed-shape executor first.

    python bench/variable_shape.py --repository DIR --port N [any `python -m service` flag]
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from fastapi import FastAPI

from service.app import configure_logging, create_app
from service.cli import main
from service.executor import ChunkResult, Executor, Float32Array, TracedCpuExecutor
from service.settings import Settings


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
    if verified.device != "cpu":
        raise ValueError("the variable-shape bench executor runs on cpu only")
    return VariableShapeExecutor(
        verified.model, verified.input_shape, verified.num_classes, verified.chunk_rows, verified.device, verified.dtype
    )


def app_from_environment() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, executor_factory=variable_shape)


if __name__ == "__main__":
    main(sys.argv[1:], app_factory="variable_shape:app_from_environment")
