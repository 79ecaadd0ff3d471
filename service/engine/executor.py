"""Executors: the only place torch runs a model. Every forward pass runs on exactly C rows.

Kernels are chosen by matrix shape, so a row's bits can change with the batch size even in eval mode.
Running every forward on one shape, (C, *input_shape), zero-padded, removes that freedom: a row's output
depends only on the row (and, on many-threaded BLAS, its position in the chunk, which the self-test
checks for every position).

The batcher, the self-test, the audit and the registry see the `Executor` protocol only. Implementations:
`TracedCpuExecutor` (CPU default), `EagerExecutor` (any model, any device: the fallback) and
`CudaGraphExecutor` (service/engine/executor_cuda.py). `build_executor` picks one from the settings.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from service.engine import trace_cache
from service.engine.types import ChunkResult, Float32Array, Outputs

log = logging.getLogger("invariant.executor")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Forwards each thread runs before its first real one (one was enough in every case measured; two for margin).
WARMUP_FORWARDS = 2


class ChunkedExecutor(ABC):
    """The chunk loop every executor shares: cut rows into pieces of at most `step` rows, run each piece
    through `_forward`, gather the outputs. Subclasses decide how one piece runs."""

    kind = "abstract"

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        num_classes: int,
        chunk_rows: int,
        device: str = "cpu",
        dtype: str = "float32",
        details: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.chunk_rows = chunk_rows
        self.device = device
        self.dtype = dtype
        self._torch_dtype = DTYPES[dtype]
        self._details = details or {}  # joins describe(): how C was chosen
        self._lock = threading.Lock()
        self._warmed = threading.local()  # .done: this thread has run the warm-up forwards
        self._prepare()

    @abstractmethod
    def _prepare(self) -> None:
        """Build what every chunk reuses (buffers, traced or captured graph), from the attributes set above."""

    def run(self, rows: Float32Array) -> Outputs:
        if rows.shape[1:] != self.input_shape:
            raise ValueError(f"rows have shape {rows.shape[1:]}, expected {self.input_shape}")
        count = rows.shape[0]
        logits = np.empty((count, self.num_classes), dtype=np.float32)
        probabilities = np.empty((count, self.num_classes), dtype=np.float32)
        class_index = np.empty((count,), dtype=np.int64)
        step = max(self._step(count), 1)
        with self._lock, torch.inference_mode():
            if not getattr(self._warmed, "done", False):
                self._warm_up_this_thread()
            for start in range(0, count, step):
                stop = min(start + step, count)
                logits[start:stop], probabilities[start:stop], class_index[start:stop] = self._forward(rows[start:stop])
        return Outputs(logits, probabilities, class_index)

    def _warm_up_this_thread(self) -> None:
        """A thread's first forward can take another path through the math libraries than every later one:
        measured with torch 2.13 on CPU (one thread), an MLP 784-1024-1024-10 at C = 16 computes the first
        forward on each new thread with other bits, traced or eager, and agrees from the second on. The
        batcher's thread starts after the self-test, so without this its first chunk would be answered with
        bits no later request gets. Each thread runs WARMUP_FORWARDS zero chunks before its first real one;
        the self-test checks that a fresh thread then agrees (service/guarantee/selftest.py)."""
        zeros: Float32Array = np.zeros((1, *self.input_shape), dtype=np.float32)
        for _ in range(WARMUP_FORWARDS):
            self._forward(zeros)
        self._warmed.done = True

    def _step(self, _count: int) -> int:
        """Rows per forward pass: always C here (the bench's variable-shape executor overrides this)."""
        return self.chunk_rows

    @abstractmethod
    def _forward(self, piece: Float32Array) -> ChunkResult:
        """piece: (n <= C, *input_shape) -> the first n rows of one C-row forward's outputs."""

    def run_plain(self, rows: Float32Array) -> Float32Array:
        with self._lock, torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(self.device)
            result: Float32Array = self.model(batch.to(self._torch_dtype)).float().cpu().numpy()
            return result

    def describe(self) -> dict[str, Any]:
        identity = {"executor": self.kind, "device": self.device, "dtype": self.dtype, "chunk_rows": self.chunk_rows}
        return {**identity, **self._details}


class EagerExecutor(ChunkedExecutor):
    """Eager PyTorch on any device: the fallback for models that cannot be traced or captured.

    The chunk is padded in host memory: on CPU that memory is the input tensor itself (a numpy view, no
    torch call: each torch call re-takes the GIL, and while the event loop is busy a re-take can wait a whole
    switch interval, 5 ms); on a GPU it is copied over once per chunk.
    """

    kind = "eager"

    def _prepare(self) -> None:
        self._on_cpu = torch.device(self.device).type == "cpu"
        # Images (C, channels, H, W) run channels-last on CPU: oneDNN's convolutions then need no layout
        # reorders (CNN 1x28x28 (32, 64), one thread: 8.7 -> 5.6 ms per 32-row chunk, 318 -> 198 us per row).
        self.channels_last = self._on_cpu and len(self.input_shape) == 3
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=layout)  # type: ignore[call-overload]  # documented, not in the stubs
        # The one execution shape: (C, *input_shape), reused so no allocation varies between calls.
        chunk = torch.zeros((self.chunk_rows, *self.input_shape), dtype=torch.float32)  # (C, *input_shape)
        self._chunk = chunk.contiguous(memory_format=layout)
        self._pad: Float32Array = self._chunk.numpy()  # a view in the chunk's layout: writes land in place
        self._heads = self._build_heads()

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        return {**described, "memory_format": "channels_last"} if self.channels_last else described

    def _build_heads(self) -> nn.Module:
        return Heads(self.model, self._torch_dtype)

    def _forward(self, piece: Float32Array) -> ChunkResult:
        count = piece.shape[0]
        self._pad[:count] = piece  # rows are independent in eval mode: pad rows only fill the shape
        self._pad[count:] = 0
        batch = self._chunk if self._on_cpu else self._chunk.to(self.device)
        logits, probabilities, index = self._heads(batch)  # (C, K), (C, K), (C,)
        return _host(logits)[:count], _host(probabilities)[:count], _host(index)[:count]


class TracedCpuExecutor(EagerExecutor):
    """The CPU default: model, softmax and argmax traced into one TorchScript graph, run in C++ with the
    GIL released once per forward instead of once per op. Raises NotTraceable when tracing fails.

    torch.jit.trace is deprecated in favour of torch.compile/export, which need a compiler toolchain at run
    time; torch is pinned, and the self-test checks the traced executor's bits before a model serves.
    """

    kind = "traced-cpu"

    def _build_heads(self) -> nn.Module:
        try:  # one trace per model structure: each trace's graph stays in the process for good
            return trace_cache.traced(Heads(self.model, self._torch_dtype), self._chunk)
        except Exception as exc:
            raise NotTraceable(repr(exc)) from exc


class NotTraceable(Exception):
    """torch.jit.trace failed on this model; the factory falls back to eager execution."""


class Heads(nn.Module):
    """Model, softmax and argmax as one module, computed in `dtype`; outputs float32/int64.

    (C, *input_shape) float32 -> logits (C, K) float32, probabilities (C, K) float32, class index (C,) int64.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # bfloat16 logits widen to float32 exactly; softmax and argmax then run on those float32 values.
        logits = self.model(batch.to(self.dtype)).float()
        return logits, torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)


def _host(tensor: torch.Tensor) -> npt.NDArray[Any]:
    return tensor.numpy() if tensor.device.type == "cpu" else tensor.cpu().numpy()
