"""The binary tensor data extension of the Open Inference Protocol (Triton's `binary_data`).

A request or response body is a JSON header of `Inference-Header-Content-Length` bytes followed by the
raw tensors in order; each tensor's `parameters.binary_data_size` says how many bytes are its own.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from service.dataplane.rows import ascii_int
from service.errors import BadRequest

HEADER = "inference-header-content-length"


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(json_part, binary_part) of a request body."""
    if header_length is None:
        return raw, b""
    size = ascii_int(header_length)
    if size is None or size > len(raw):
        raise BadRequest(f"invalid Inference-Header-Content-Length {header_length!r} for a {len(raw)}-byte body")
    return raw[:size], raw[size:]


def parameters_of(obj: dict[str, Any], what: str) -> dict[str, Any]:
    """The optional `parameters` object of a V2 request, input or output."""
    parameters = obj.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f'{what}: "parameters" must be a JSON object, got {type(parameters).__name__}')
    return parameters


def flag_of(obj: dict[str, Any], what: str, name: str, default: bool) -> bool:
    """A boolean parameter: JSON true or false only ("false" is a string, and truthy)."""
    value = parameters_of(obj, what).get(name, default)
    if type(value) is not bool:
        raise BadRequest(f'{what}: "{name}" must be true or false, got {value!r}')
    return value


def take_binary_inputs(tensors: list[dict[str, Any]], binary: bytes) -> list[bytes | None]:
    """The raw bytes of each input that declares `binary_data_size` (None for JSON inputs)."""
    parts: list[bytes | None] = []
    offset = 0
    for tensor in tensors:
        size = parameters_of(tensor, f"input {tensor.get('name')!r}").get("binary_data_size")
        if size is None:
            parts.append(None)
            continue
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadRequest(f"input {tensor.get('name')!r}: binary_data_size {size!r} exceeds the binary data")
        parts.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return parts


def encode_tensor(values: np.ndarray[Any, Any] | list[str]) -> bytes:
    """Raw bytes of an output: little-endian numbers, or BYTES as 4-byte length + UTF-8 per element."""
    if isinstance(values, list):
        return b"".join(struct.pack("<I", len(item.encode())) + item.encode() for item in values)
    return np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
