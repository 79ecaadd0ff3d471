"""One prediction receipt: what it holds, its digests, its canonical encoding, and how it is checked.

A receipt says, for one answered row: which model (name, version, checkpoint sha256) under which numerics
(fingerprint and its parts, execution shape C included) turned the row whose float32 bytes hash to
`input_sha256` into the outputs whose bytes hash to `output_sha256`, when, in which request. No raw input.
Since a row's bits depend only on (checkpoint, numerics, row), anyone holding the row can re-derive the rest.

Encodings (also in docs/receipts.md, so that an auditor can check receipts without this code):
- input bytes: the row as the model saw it, float32 little-endian, C order, the model's input shape.
- output bytes: the row's logits (K float32 LE), then its probabilities (K float32 LE), then its class index
  (one int64 LE).
- canonical encoding: the receipt without `signature` as JSON, keys sorted at every level, no whitespace,
  UTF-8 (json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)); receipts hold no floats.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

FORMAT = "invariant-receipt/1"
MAX_TEXT = 1024  # model names, request ids, times: bounded text
MAX_NUMERICS_PARTS = 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


class ReceiptError(ValueError):
    """A value that is not a well-formed receipt; the message names the field, never echoes a secret."""


@dataclass(frozen=True)
class ModelIdentity:
    """What a receipt says about the model that computed a row: the same for every row it answers."""

    model: str
    version: str
    checkpoint_sha256: str
    fingerprint: str
    numerics: dict[str, Any]  # the fingerprint's parts: libraries, CPU, threads, executor, C ("chunk_rows"), dtype


@dataclass(frozen=True)
class Receipt:
    format: str
    model: str
    version: str
    checkpoint_sha256: str
    fingerprint: str
    numerics: dict[str, Any]
    request_id: str
    row: int  # the row's index in its request
    input_sha256: str
    output_sha256: str
    time: str  # UTC, ISO 8601 with microseconds and a Z
    key_id: str  # which signing key (service/receipts/keys.py), never the key
    signature: str  # HMAC-SHA256 of the canonical encoding, hex

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def signed_part(self) -> bytes:
        """The canonical encoding the signature covers: every field but the signature."""
        fields = self.as_dict()
        del fields["signature"]
        return canonical(fields)


def canonical(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def input_digest(row: npt.NDArray[np.float32]) -> str:
    """sha256 of one row (*input_shape) as float32 little-endian bytes, C order."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def output_digest(logits: npt.NDArray[np.float32], probabilities: npt.NDArray[np.float32], index: int) -> str:
    """sha256 of one row's outputs: logits (K,) and probabilities (K,) float32 LE, then the class index int64 LE."""
    hashed = hashlib.sha256(np.ascontiguousarray(logits, dtype="<f4").tobytes())
    hashed.update(np.ascontiguousarray(probabilities, dtype="<f4").tobytes())
    hashed.update(int(index).to_bytes(8, "little", signed=True))
    return hashed.hexdigest()


def parse_receipt(value: Any) -> Receipt:
    """A receipt from untrusted JSON (a client, a log line): exactly the fields above, each checked."""
    if not isinstance(value, dict):
        raise ReceiptError(f"a receipt is a JSON object, got {type(value).__name__}")
    names = set(Receipt.__dataclass_fields__)
    missing, unknown = sorted(names - value.keys()), sorted(str(k)[:64] for k in value.keys() - names)
    if missing or unknown:
        raise ReceiptError(f"receipt fields: missing {missing}, unknown {unknown}")
    if value["format"] != FORMAT:
        raise ReceiptError(f'receipt "format" must be {FORMAT!r}')
    for name in ("model", "version", "request_id", "time"):
        _text(value, name)
    for name in ("checkpoint_sha256", "input_sha256", "output_sha256", "signature"):
        _hex(value, name, _HEX64)
    for name in ("fingerprint", "key_id"):
        _hex(value, name, _HEX16)
    row = value["row"]
    if type(row) is not int or not 0 <= row < 2**31:
        raise ReceiptError('receipt "row" must be a non-negative integer')
    numerics = value["numerics"]
    if not isinstance(numerics, dict) or len(numerics) > MAX_NUMERICS_PARTS:
        raise ReceiptError(f'receipt "numerics" must be an object of at most {MAX_NUMERICS_PARTS} parts')
    return Receipt(**value)


def _text(value: dict[str, Any], name: str) -> None:
    text = value[name]
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ReceiptError(f'receipt "{name}" must be text of at most {MAX_TEXT} characters')


def _hex(value: dict[str, Any], name: str, pattern: re.Pattern[str]) -> None:
    text = value[name]
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise ReceiptError(f'receipt "{name}" must be lowercase hex of the right length')
