"""The fixed-shape executor: every forward pass runs on exactly C rows. The only place torch runs a model.

Kernels are chosen by matrix shape, so a row's bits can change with the batch size even in eval mode.
Running every forward on one shape, (C, *input_shape), zero-padded, removes that freedom: a row's output
depends only on the row (and, on many-threaded BLAS, its position in the chunk, which the self-test
checks for every position).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

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

    def run(self, rows: Float32Array) -> Outputs:
        """rows: (N, *input_shape) float32 -> Outputs with N rows. N may be any size >= 1."""
        if rows.shape[1:] != self.input_shape:
            raise ValueError(f"rows have shape {rows.shape[1:]}, expected {self.input_shape}")
        count = rows.shape[0]
        logits = np.empty((count, self.num_classes), dtype=np.float32)
        probabilities = np.empty((count, self.num_classes), dtype=np.float32)
        class_index = np.empty((count,), dtype=np.int64)
        step = count if self.variable_shape else self.chunk_rows
        source = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        with self._lock, torch.inference_mode():
            for start in range(0, count, max(step, 1)):
                stop = min(start + step, count)
                chunk_logits, chunk_probs, chunk_index = self._forward(source[start:stop])
                logits[start:stop] = chunk_logits
                probabilities[start:stop] = chunk_probs
                class_index[start:stop] = chunk_index
        return Outputs(logits, probabilities, class_index)

    def _forward(self, piece: torch.Tensor) -> tuple[Float32Array, Float32Array, Int64Array]:
        """piece: (n <= C, *input_shape) -> the first n rows of logits, softmax and argmax of one C-row pass."""
        count = piece.shape[0]
        if self.variable_shape:
            batch = piece.to(self.device)
        else:
            # Zero padding: rows are independent in eval mode, so pad rows only fill the shape.
            self._chunk.zero_()
            self._chunk[:count].copy_(piece)
            batch = self._chunk
        chunk_logits = self.model(batch)  # (C, K)
        chunk_probs = torch.softmax(chunk_logits, dim=1)  # (C, K), from the same fixed-shape logits
        chunk_index = torch.argmax(chunk_logits, dim=1)  # (C,)
        return (
            chunk_logits[:count].cpu().numpy(),
            chunk_probs[:count].cpu().numpy(),
            chunk_index[:count].cpu().numpy(),
        )

    def run_plain(self, rows: Float32Array) -> Float32Array:
        """`model(batch)` on the whole batch, as other servers do: the control the guarantee is measured against."""
        with self._lock, torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(self.device)
            result: Float32Array = self.model(batch).cpu().numpy()
            return result
