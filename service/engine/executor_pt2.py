"""Imported torch.export programs (`model.pt2`): the pre-check (models/pt2_check.py), then the program's
`.module()` run at the fixed C rows behind the `Executor` protocol, like one of our own checkpoints.

torch.export.load gets only the archive the pre-check rebuilt, as bytes (never the user's file): checked JSON,
raw weight storage and an empty sample-inputs member, so none of its pickle, sympy or guard-code paths can
see attacker data. The exported module is an FX GraphModule of ATen ops with no dropout and BatchNorm in
its no-training form (proven from the graph); it runs eagerly at (C, *shape) (torch.jit.trace refuses the
program's symbolic batch size: "JIT Tracing of SymInts isn't supported"), in the contiguous layout the program
was exported in (channels-last, which our own CNNs use, changes its bits against the program run alone), and
the start-up self-test then checks its rows are independent.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import Manifest
from models.checkpoint import CheckpointError
from models.pt2_check import check_pt2
from service.engine.executor import EagerExecutor
from service.engine.executor_imported import check_signature, executors_at, open_imported, refusal_as_error
from service.engine.types import Executor
from service.settings import Settings

log = logging.getLogger("invariant.executor")
FORMAT = "pytorch_torch_export"


class Pt2Executor(EagerExecutor):
    """The exported module at exactly C rows, zero-padded, contiguous; softmax and argmax as `Heads` does."""

    kind = "torch-export-eager"

    def _prepare(self) -> None:
        self._on_cpu = True
        self.channels_last = False
        self._chunk = torch.zeros((self.chunk_rows, *self.input_shape), dtype=torch.float32)  # (C, *input_shape)
        self._pad = self._chunk.numpy()  # a view: writes land in the chunk
        self._heads = self._build_heads()


def load_program(archive_bytes: bytes) -> nn.Module:
    """The checked archive's program as a module; raises CheckpointError when torch cannot rebuild it."""
    try:
        program = torch.export.load(io.BytesIO(archive_bytes))
        module: nn.Module = program.module()
    except Exception as exc:  # torch's own deserialization or verifier errors: the program is refused
        raise CheckpointError(f"torch.export cannot load the program: {str(exc).splitlines()[0][:300]}") from None
    return module


def load_pt2_executor(path: Path, manifest: Manifest, settings: Settings) -> tuple[Callable[[int], Executor], Executor]:
    """An imported .pt2 version directory, checked: build(C) -> its executor at C, and the preferred executor.
    Raises CheckpointError with the reason."""
    config, model_path = open_imported(path, manifest, settings, "pt2")
    checked = refusal_as_error(lambda: check_pt2(model_path))
    check_signature(checked.signature, config, manifest)
    module = load_program(checked.archive_bytes)
    shape, classes = manifest.input.shape, checked.signature.num_classes
    about = {"format": FORMAT, "torch": torch.__version__}

    def make(chunk_rows: int, details: dict[str, Any] | None) -> Executor:
        return Pt2Executor(module, shape, classes, chunk_rows, "cpu", "float32", {**about, **(details or {})})

    return executors_at(make, settings)
