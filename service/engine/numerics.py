"""Pinned numerics: the part of the guarantee that lives in process-wide torch state."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from service.engine.numerics_env import CPU_MODEL_PINNED_BY, numerics_environment


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


@dataclass(frozen=True)
class NumericsFingerprint:
    """A short hash of everything that decides a row's bits, with the parts it was computed from. Two
    servers with the same fingerprint and the same weights give the same bits for the same row."""

    fingerprint: str
    parts: dict[str, Any]


def fingerprint_of(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def numerics_fingerprint(executor: dict[str, Any], device: str) -> NumericsFingerprint:
    """The fingerprint of a model served by an executor that describes itself as `executor` (kind, dtype,
    C) on `device`, in this process (call after pin_numerics: the thread count is torch's)."""
    parts: dict[str, Any] = {
        **_library_parts(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "executor": executor.get("executor", "unknown"),
        "chunk_rows": executor["chunk_rows"],
        "dtype": executor["dtype"],
        "device": _device_name(device),
        "environment": numerics_environment(os.environ),
    }
    # channels-last images use other convolution kernels than NCHW; an imported model's bits are onnxruntime's
    # small_chunk_rows: a proven shape pair (service/engine/pair.py) serves lone requests at that C too.
    for key in ("memory_format", "onnxruntime", "graph_optimization", "small_chunk_rows"):
        if key in executor:
            parts[key] = executor[key]
    # MKL and oneDNN pick kernels by the CPU they find unless capped: then the CPU model decides bits too.
    # onnxruntime's kernels follow the CPU whatever those variables say.
    if "onnxruntime" in executor or not all(name in os.environ for name in CPU_MODEL_PINNED_BY):
        parts["cpu_model"] = _cpu_model()
    return NumericsFingerprint(fingerprint_of(parts), parts)


@cache
def _library_parts() -> dict[str, str]:
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version ([^\n]+?) for", config)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    return {
        "torch": torch.__version__,
        "torch_build": torch.version.git_version,
        "blas": f"{blas.group(1) if blas else 'unknown'} {mkl.group(1) if mkl else ''}".strip(),
        "onednn": onednn.group(1) if onednn else "none",
    }


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        cudnn = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, cuDNN {cudnn})"
    return device


@cache
def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
