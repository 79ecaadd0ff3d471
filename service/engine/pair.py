"""Two execution shapes that give every row the same bits: a lone request stops paying for C_large padded rows.

A chunk of at most C_small rows runs as one C_small-row forward, a larger one in C_large-row forwards. Which
of the two ran cannot show in a row's bits only if they agree, row by row, at every position and beside any
co-rows: the self-test proves that on the host before the pair serves (service/guarantee/shape.py
`prove_pair`, which runs the ordinary self-test through this executor at both shapes' batch sizes), and
a pair that is not proven is not used. Measured (docs/numerics.md): on an AVX2 host C_small = 8 with
C_large = 32 agrees for the digits MLP, the 784-1024-1024 MLP and the CNN natively, AVX2- and SSE4.2-capped
and under portable numerics (C_small = 4 except under portable numerics); on an AVX-512 host not natively
for the two MLPs, which then serve one shape.
"""

from __future__ import annotations

from typing import Any

from service.engine.types import Executor, Float32Array, Outputs


class PairedExecutor:
    """The Executor protocol over two executors of one model: `small` (C_small rows) and `large` (C_large)."""

    def __init__(self, small: Executor, large: Executor) -> None:
        if not small.chunk_rows < large.chunk_rows:
            raise ValueError(f"C_small = {small.chunk_rows} must be below C_large = {large.chunk_rows}")
        self.small = small
        self.large = large

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.large.input_shape

    @property
    def chunk_rows(self) -> int:
        """C_large: the batcher packs chunks of up to this many rows."""
        return self.large.chunk_rows

    @property
    def small_chunk_rows(self) -> int:
        return self.small.chunk_rows

    @property
    def num_classes(self) -> int:
        return self.large.num_classes

    @property
    def device(self) -> str:
        return self.large.device

    @property
    def dtype(self) -> str:
        return self.large.dtype

    def run(self, rows: Float32Array) -> Outputs:
        """rows (N, *input_shape): one C_small-row forward when N <= C_small, else C_large-row forwards."""
        return (self.small if rows.shape[0] <= self.small.chunk_rows else self.large).run(rows)

    def run_plain(self, rows: Float32Array) -> Float32Array:
        return self.large.run_plain(rows)

    def describe(self) -> dict[str, Any]:
        return {**self.large.describe(), "small_chunk_rows": self.small.chunk_rows}


def shapes_of(executor: Executor) -> tuple[int, ...]:
    """The C's an executor runs at: (C,) or (C_large, C_small)."""
    small = getattr(executor, "small_chunk_rows", None)
    return (executor.chunk_rows,) if small is None else (executor.chunk_rows, small)
