"""Pinned numerics: the part of the guarantee that lives in process-wide torch state."""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

import torch


def pin_numerics(threads: int) -> None:
    """Fix everything that lets torch pick a different kernel or reduction order between calls.

    The guarantee holds per (hardware, library versions, thread count, C): MKL splits rows across threads,
    so the thread count is part of the execution shape.
    """
    torch.set_num_threads(threads)
    # Inter-op threads can be set once per process; when already set, the intra-op count is what matters.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    # torch.use_deterministic_algorithms() also imports torch._inductor (and with it _dynamo and sympy, ~75 MB
    # per process) only to set inductor's flag; the service never compiles, so set the eager flag alone.
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    # cuBLAS needs a fixed workspace for deterministic results (only read when CUDA is used).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def environment_report(device: str) -> dict[str, Any]:
    """What the guarantee is relative to; published in every model's metadata."""
    report: dict[str, Any] = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "mkl": bool(torch.backends.mkl.is_available()),  # type: ignore[no-untyped-call]
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if device == "cuda" and torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name()
        report["cuda_version"] = torch.version.cuda
    return report
