"""`build_executor`: from a loaded float32 checkpoint and the settings to the executor that serves it.

Device: `cpu`, `cuda`, or `auto` (cuda when available). Dtype: float32, or bfloat16 on cuda only (the
checkpoint stays float32 and is cast here, at load). Implementation: CUDA graph on a GPU, traced TorchScript
on CPU, eager where those fail. C: the setting, the device's default, or `auto`: calibrated per model
(service/engine/calibration.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models import Manifest
from service.engine.calibration import calibrate
from service.engine.executor import DTYPES, ChunkedExecutor, EagerExecutor, NotTraceable, TracedCpuExecutor
from service.settings import Settings

log = logging.getLogger("invariant.executor")
# C when the setting leaves it open. CPU: 32 rows (the first stage's measured default). GPU: 64 rows, the
# design notes' H200 measurement (C=64 replayed as a graph cost less than one unpadded eager row).
DEFAULT_CHUNK_ROWS = {"cpu": 32, "cuda": 64}


class PlacementError(ValueError):
    """The device/dtype settings cannot be honoured on this machine; the message names the setting."""


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32" or "bfloat16"


def resolve_placement(device: str, dtype: str) -> Placement:
    """The device and dtype models run in, or PlacementError saying which setting is wrong and why."""
    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    elif device == "cuda" and not cuda:
        raise PlacementError("device 'cuda' requested but torch.cuda.is_available() is false on this machine")
    if dtype not in DTYPES:
        raise PlacementError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if dtype == "bfloat16" and device != "cuda":
        raise PlacementError(
            f"dtype 'bfloat16' needs device 'cuda' (device resolved to {device!r}); use dtype 'float32' on CPU"
        )
    return Placement(device, dtype)


def build_executor(
    model: nn.Module, manifest: Manifest, settings: Settings, chunk_rows: int | None = None
) -> ChunkedExecutor:
    """The executor for one model version: the model cast and moved once, then wrapped. `chunk_rows`: this C
    instead of the settings' (a candidate the shape proof tries, service/guarantee/shape.py)."""
    placement = resolve_placement(settings.device, settings.dtype)
    model = model.to(device=placement.device, dtype=DTYPES[placement.dtype]).eval()
    shape, classes = manifest.input.shape, len(manifest.class_labels)
    if chunk_rows is not None:
        return make_executor(model, shape, classes, chunk_rows, placement)
    if settings.chunk_rows != "auto":
        chunk_rows = settings.chunk_rows or DEFAULT_CHUNK_ROWS[placement.device]
        return make_executor(model, shape, classes, chunk_rows, placement)
    calibration = calibrate(
        lambda chunk_rows: make_executor(model, shape, classes, chunk_rows, placement), settings.chunk_latency_bound_ms
    )
    log.info(
        "model %s: chunk rows %d chosen from %s ms per chunk (bound %g ms)", manifest.name, calibration.chunk_rows,
        calibration.describe()["chunk_timings_ms"], calibration.bound_ms,
    )  # fmt: skip
    return make_executor(model, shape, classes, calibration.chunk_rows, placement, calibration.describe())


def make_executor(
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    chunk_rows: int,
    placement: Placement,
    details: dict[str, Any] | None = None,
) -> ChunkedExecutor:
    """CUDA graph on a GPU, traced on CPU; eager when the model cannot be captured or traced. `details` join
    the executor's description (the calibration behind an automatic C)."""
    args = (model, input_shape, num_classes, chunk_rows, placement.device, placement.dtype, details)
    if placement.device == "cuda":
        from service.engine.executor_cuda import CudaGraphExecutor, GraphCaptureFailed

        try:
            return CudaGraphExecutor(*args)
        except GraphCaptureFailed as exc:
            log.warning("CUDA graph capture failed, running eagerly: %s", exc)
            return EagerExecutor(*args)
    try:
        return TracedCpuExecutor(*args)
    except NotTraceable as exc:
        log.warning("model not traceable, running eagerly: %s", exc)
        return EagerExecutor(*args)
