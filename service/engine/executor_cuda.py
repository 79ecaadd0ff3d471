"""The GPU executor: the C-row forward captured once as a CUDA graph and replayed for every chunk.

A graph replays the exact kernels recorded at capture, on the same static buffers, so every chunk runs the
same kernels in the same order: the fixed shape's guarantee, and the cheapest launch path (one replay
instead of one launch per op). Host<->device copies go through pinned buffers, asynchronously on the
stream that replays the graph, then one synchronize per chunk.
"""

from __future__ import annotations

import torch
from torch import nn

from service.engine.executor import ChunkedExecutor, Heads
from service.engine.types import ChunkResult, Float32Array

WARMUP_PASSES = 3  # CUDA graphs need the kernels' lazy initialization (cuBLAS handles, workspaces) done first


class GraphCaptureFailed(Exception):
    """The model's forward cannot be captured as a CUDA graph; the factory falls back to eager execution."""


class CudaGraphExecutor(ChunkedExecutor):
    kind = "cuda-graph"

    def _prepare(self) -> None:
        chunk_rows, num_classes, device = self.chunk_rows, self.num_classes, self.device
        shape = (chunk_rows, *self.input_shape)
        # Host side, pinned: the chunk is padded here (numpy view, no torch call), outputs land here.
        self._host_in = torch.zeros(shape, dtype=torch.float32).pin_memory()  # (C, *input_shape)
        self._pad: Float32Array = self._host_in.numpy()
        self._host_out = (
            torch.empty((chunk_rows, num_classes), dtype=torch.float32).pin_memory(),  # logits (C, K)
            torch.empty((chunk_rows, num_classes), dtype=torch.float32).pin_memory(),  # probabilities (C, K)
            torch.empty((chunk_rows,), dtype=torch.int64).pin_memory(),  # class index (C,)
        )
        # Device side, static: the graph reads this input buffer and writes its output buffers every replay.
        self._static_in = torch.zeros(shape, dtype=torch.float32, device=device)
        self._stream = torch.cuda.current_stream(device)
        try:
            self._graph, self._static_out = self._capture(Heads(self.model, self._torch_dtype))
        except RuntimeError as exc:
            raise GraphCaptureFailed(repr(exc)) from exc

    def _capture(self, heads: nn.Module) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]:
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(self._stream)
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                heads(self._static_in)
        self._stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            outputs: tuple[torch.Tensor, ...] = tuple(heads(self._static_in))
        torch.cuda.synchronize(self.device)
        return graph, outputs

    def _forward(self, piece: Float32Array) -> ChunkResult:
        count = piece.shape[0]
        self._pad[:count] = piece  # pad rows only fill the shape: rows are independent in eval mode
        self._pad[count:] = 0
        with torch.cuda.stream(self._stream):
            self._static_in.copy_(self._host_in, non_blocking=True)
            self._graph.replay()
            for host, device_out in zip(self._host_out, self._static_out, strict=True):
                host.copy_(device_out, non_blocking=True)
        self._stream.synchronize()  # the pinned outputs are complete; the caller copies them before next chunk
        logits, probabilities, index = (tensor.numpy() for tensor in self._host_out)
        return logits[:count], probabilities[:count], index[:count]
