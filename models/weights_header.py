"""The weights file's claims checked against the manifest's architecture before anything is allocated.

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming each
tensor's dtype, shape and byte range. The architecture is built on the meta device (shapes only, no
memory), so a manifest that claims hidden widths [16384, 16384, 16384] next to 256-wide weights is refused
by name ("shape mismatch: ...") instead of allocating gigabytes for a model that cannot load.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, BinaryIO

import torch
from torch import nn

from models.architectures import build_model
from models.config import ArchConfig

# safetensors refuses headers over 100 MB itself; ours hold one short entry per tensor.
MAX_HEADER_BYTES = 100_000_000
_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip
_ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


class HeaderMismatch(ValueError):
    """The weights file does not hold what the architecture needs; the message names the tensor."""


def expected_tensors(config: ArchConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (safetensors dtype, shape) of every tensor of the model's state dict, allocating nothing."""
    with torch.device("meta"):
        model: nn.Module = build_model(config)
    return {key: (_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape)) for key, t in model.state_dict().items()}


def read_header(handle: BinaryIO) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """name -> (dtype, shape, byte length) of each tensor the header of the open file claims, checked
    against the file's size: every range inside the data, each as long as its shape and dtype say."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    prefix = handle.read(8)
    if len(prefix) != 8:
        raise HeaderMismatch("unreadable weights: weights file is shorter than a safetensors header")
    length = int.from_bytes(prefix, "little")
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise HeaderMismatch(f"unreadable weights: weights header claims {length} bytes; the file holds {size} bytes")
    try:
        header = json.loads(handle.read(length))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise HeaderMismatch(f"unreadable weights: weights header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise HeaderMismatch("unreadable weights: weights header is not a JSON object")
    data_bytes = size - 8 - length
    return {name: _entry(name, entry, data_bytes) for name, entry in header.items() if name != "__metadata__"}


def _entry(name: str, entry: Any, data_bytes: int) -> tuple[str, tuple[int, ...], int]:
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise HeaderMismatch(f"unreadable weights: header entry {name!r} lacks dtype, shape or data_offsets") from None
    if dtype not in _ITEM_BYTES or not all(type(n) is int and n >= 0 for n in (*shape, begin, end)):
        raise HeaderMismatch(f"unreadable weights: header entry {name!r} has an invalid dtype, shape or range")
    if not begin <= end <= data_bytes or end - begin != math.prod(shape) * _ITEM_BYTES[dtype]:
        raise HeaderMismatch(
            f"unreadable weights: header entry {name!r}: bytes {begin}..{end} do not hold {dtype} {list(shape)}"
        )
    return dtype, shape, end - begin


def check_header(config: ArchConfig, handle: BinaryIO) -> None:
    """HeaderMismatch naming the first tensor whose name, dtype or shape differs between the architecture
    (as the manifest describes it) and the weights file's header."""
    expected = expected_tensors(config)
    claimed = read_header(handle)
    # Shapes of the tensors both name first: a manifest wider or deeper than its weights is named as such,
    # not as the running statistics its extra layers would lack.
    for key, (dtype, shape) in expected.items():
        if key not in claimed:
            continue
        got_dtype, got_shape, _ = claimed[key]
        if got_shape != shape:
            raise HeaderMismatch(f"shape mismatch: {key} manifest {list(shape)} weights {list(got_shape)}")
        if got_dtype != dtype:
            raise HeaderMismatch(f"dtype mismatch: {key} manifest {dtype} weights {got_dtype}")
    missing = sorted(set(expected) - set(claimed))
    if missing:
        stats = [key for key in missing if key.rsplit(".", 1)[-1] in {"running_mean", "running_var"}]
        if stats:
            raise HeaderMismatch(f"BatchNorm running statistics missing from the weights: {stats}")
        raise HeaderMismatch(f"weights missing from the checkpoint: {missing}")
    unexpected = sorted(set(claimed) - set(expected))
    if unexpected:
        raise HeaderMismatch(f"unexpected weights in the checkpoint: {unexpected}")
