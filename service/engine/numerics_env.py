"""The environment variables that decide which kernels torch, MKL and oneDNN run, and the portable set.
torch-free: the CLI sets them before torch is imported (they are read when the libraries initialise).

Portable numerics (`--portable-numerics`) pin every lever known to let different x86 CPUs compute different
bits for the same row: ATen's vectorised kernels capped at the baseline (`default`: no AVX2/AVX-512 paths),
MKL's conditional numerical reproducibility in its most compatible mode, oneDNN's instruction set capped at
SSE4.1. A fleet whose CPUs all have AVX2 can set the three variables itself to avx2 / AVX2 / AVX2 instead
(cheaper); the numerics fingerprint records whichever values are in force.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

PORTABLE_ENVIRONMENT: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}
# Everything read from the environment that can change a row's bits (thread counts are recorded from torch).
NUMERICS_ENV_VARS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "CUBLAS_WORKSPACE_CONFIG",
)
# When both are set, MKL and oneDNN no longer choose kernels by the CPU model, so it leaves the fingerprint.
CPU_MODEL_PINNED_BY = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def apply_portable_numerics(environ: MutableMapping[str, str]) -> None:
    environ.update(PORTABLE_ENVIRONMENT)


def portable_numerics_missing(environ: Mapping[str, str]) -> list[str]:
    """The portable settings not in force in `environ`, as NAME=VALUE."""
    return [f"{k}={v}" for k, v in PORTABLE_ENVIRONMENT.items() if environ.get(k) != v]


def numerics_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in NUMERICS_ENV_VARS if name in environ}
