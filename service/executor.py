"""The fixed-shape executor: every forward pass runs on exactly C rows. The only place torch runs a model.

Kernels are chosen by matrix shape, so a row's bits can change with the batch size even in eval mode.
Running every forward on one shape, (C, *input_shape), zero-padded, removes that freedom: a row's output
depends only on the row (and, on many-threaded BLAS, its position in the chunk, which the self-test
checks for every position).
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

log = logging.getLogger("invariant.executor")
Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Outputs:
    """Per-row results, all computed from the same fixed-shape forward. Shapes: (N, K), (N, K), (N,)."""

    logits: Float32Array
    probabilities: Float32Array
    class_index: Int64Array

    def row(self, index: int) -> Outputs:
        return Outputs(
            self.logits[index : index + 1],
            self.probabilities[index : index + 1],
            self.class_index[index : index + 1],
        )

    def bitwise_equal(self, other: Outputs) -> bool:
        return (
            self.logits.tobytes() == other.logits.tobytes()
            and self.probabilities.tobytes() == other.probabilities.tobytes()
            and self.class_index.tobytes() == other.class_index.tobytes()
        )


class FixedShapeExecutor:
    """Runs an eval-mode model on (N, *input_shape) float32 rows, C rows per forward pass.

    Thread-safe (one forward at a time): the batcher's compute thread, the auditor and the self-test share it.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        num_classes: int,
        chunk_rows: int,
        device: str = "cpu",
        variable_shape: bool = False,
        trace: bool = True,
    ) -> None:
        self.model = model.to(device).eval()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.chunk_rows = chunk_rows
        self.device = torch.device(device)
        self.variable_shape = variable_shape
        self._lock = threading.Lock()
        # The one execution shape: (C, *input_shape). Reused so no allocation varies between calls.
        self._chunk = torch.zeros((chunk_rows, *input_shape), dtype=torch.float32, device=self.device)
        # Model, softmax and argmax as one module: traced on CPU when possible (one TorchScript graph run in
        # C++, the GIL released once per forward instead of once per op), else eager. The variable-shape
        # (bench-only) mode runs the same module, so the cost of the guarantee is compared like for like.
        traced = _trace_heads(self.model, self._chunk) if trace and self.device.type == "cpu" else None
        self._heads: nn.Module = traced if traced is not None else _Heads(self.model)
        # On CPU, padding writes a numpy view of the chunk's own memory, with no torch call: each torch call
        # re-takes the GIL, and while the event loop is busy a re-take can wait a whole switch interval (5 ms).
        self._pad: Float32Array | None = self._chunk.numpy() if self.device.type == "cpu" else None

    def run(self, rows: Float32Array) -> Outputs:
        """rows: (N, *input_shape) float32 -> Outputs with N rows. N may be any size >= 1."""
        if rows.shape[1:] != self.input_shape:
            raise ValueError(f"rows have shape {rows.shape[1:]}, expected {self.input_shape}")
        count = rows.shape[0]
        logits = np.empty((count, self.num_classes), dtype=np.float32)
        probabilities = np.empty((count, self.num_classes), dtype=np.float32)
        class_index = np.empty((count,), dtype=np.int64)
        step = count if self.variable_shape else self.chunk_rows
        with self._lock, torch.inference_mode():
            for start in range(0, count, max(step, 1)):
                stop = min(start + step, count)
                chunk_logits, chunk_probs, chunk_index = self._forward(rows[start:stop])
                logits[start:stop] = chunk_logits
                probabilities[start:stop] = chunk_probs
                class_index[start:stop] = chunk_index
        return Outputs(logits, probabilities, class_index)

    def _forward(self, piece: Float32Array) -> tuple[Float32Array, Float32Array, Int64Array]:
        """piece: (n <= C, *input_shape) -> the first n rows of logits, softmax and argmax of one pass: C rows
        (zero-padded), or n rows in the bench-only variable-shape mode."""
        count = piece.shape[0]
        chunk_logits, chunk_probs, chunk_index = self._heads(self._batch_of(piece))  # (C, K), (C, K), (C,)
        return _host(chunk_logits)[:count], _host(chunk_probs)[:count], _host(chunk_index)[:count]

    def _batch_of(self, piece: Float32Array) -> torch.Tensor:
        """The tensor one forward runs on: the C-row chunk holding `piece` then zeros (rows are independent in
        eval mode, so pad rows only fill the shape), or `piece` itself in variable-shape mode."""
        if self.variable_shape:
            return torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)).to(self.device)
        count = piece.shape[0]
        if self._pad is not None:
            self._pad[:count] = piece
            self._pad[count:] = 0
        else:
            self._chunk.zero_()
            self._chunk[:count].copy_(torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)))
        return self._chunk

    def run_plain(self, rows: Float32Array) -> Float32Array:
        """`model(batch)` on the whole batch, as other servers do: the control the guarantee is measured against."""
        with self._lock, torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(self.device)
            result: Float32Array = self.model(batch).cpu().numpy()
            return result


class _Heads(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(batch)
        return logits, torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)


def _host(tensor: torch.Tensor) -> npt.NDArray[Any]:
    return tensor.numpy() if tensor.device.type == "cpu" else tensor.cpu().numpy()


def _trace_heads(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule | None:
    """The traced graph, or None (eager execution) when the model cannot be traced.

    torch.jit.trace is deprecated in favour of torch.compile/export, which need a compiler toolchain at run
    time; torch is pinned, and the self-test checks the traced executor's bits before a model serves.
    """
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
                _Heads(model), example, check_trace=False
            )
            return traced
    except Exception as exc:  # an untraceable model still serves, eagerly
        log.warning("model not traceable, running eagerly: %r", exc)
        return None
