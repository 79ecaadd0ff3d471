"""The engine's seam, free of torch: the arrays rows and outputs travel in, and the `Executor` protocol that
the batcher, the self-test, the audit and the registry see. Protocols and the data plane import these types
without loading torch; a non-torch executor (ONNX Runtime) implements the same protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]
ChunkResult = tuple[Float32Array, Float32Array, Int64Array]  # logits (n, K), probabilities (n, K), argmax (n,)


def all_finite(array: npt.NDArray[Any]) -> bool:
    """Whether no value is NaN or infinite: one float64 sum (NaN and inf carry through it; finite float32
    values cannot overflow it), no boolean array as np.isfinite(array).all() makes."""
    return math.isfinite(np.add.reduce(array, axis=None, dtype=np.float64))


@dataclass(frozen=True)
class Outputs:
    """Per-row results, all computed from the same fixed-shape forward. Shapes: (N, K), (N, K), (N,).
    `finite`: True when every logit is known to be finite (the batcher checks each chunk's logits once);
    False: not known, check them."""

    logits: Float32Array
    probabilities: Float32Array
    class_index: Int64Array
    finite: bool = False

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


@dataclass
class RequestTiming:
    """Where one request's time went, filled in by the batcher's compute thread (read once it is answered):
    seconds from queueing to its first chunk's forward, and the seconds of the forwards that held its rows."""

    queue_s: float = 0.0
    compute_s: float = 0.0


class Executor(Protocol):
    """Runs one eval-mode model on float32 rows (N, *input_shape), C rows per forward pass.

    Thread-safe: the batcher's compute thread, the auditor and the self-test share one executor.
    """

    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def chunk_rows(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str:
        """ "float32" or "bfloat16": what the model computes in; inputs and outputs are float32."""
        ...

    def run(self, rows: Float32Array) -> Outputs:
        """rows: (N >= 1, *input_shape) float32 -> Outputs with N rows, each from a C-row forward, in arrays
        made for this call: the batcher answers requests with views of them (never reuse them)."""
        ...

    def run_plain(self, rows: Float32Array) -> Float32Array:
        """`model(batch)` on the whole batch, as other servers do: the control the guarantee is measured
        against. (N, *input_shape) -> logits (N, K) float32."""
        ...

    def describe(self) -> dict[str, Any]:
        """What this executor is, for the model's metadata: kind, device, dtype, C."""
        ...
