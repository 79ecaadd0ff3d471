"""HTTP plumbing shared by the protocol routes: bounded body reading, JSON parsing, JSON responses."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.inputs import ascii_int
from service.loader import ServedModel


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if ascii_int(declared) is None:
            raise BadRequest(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        return await request.body()
    received = bytearray()
    async for part in request.stream():  # chunked transfer: count as we go
        received += part
        if len(received) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    return bytes(received)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON, except that NaN/Infinity literals parse (so the row check can name the row)."""
    if not raw:
        raise BadRequest("empty request body: expected a JSON object")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = _parse_lenient(raw)
    if not isinstance(parsed, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _parse_lenient(raw: bytes) -> Any:
    try:
        # Accepts NaN and Infinity, which orjson refuses. Integers too long for a float64 become floats
        # (inf), so the row check names them instead of numpy overflowing.
        return json.loads(raw, parse_int=_json_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def _json_int(text: str) -> int | float:
    return int(text) if len(text) <= 300 else float(text)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes each float32 (widened exactly to float64) as the shortest decimal that reads back to
    # the same float64, so parsing the JSON and narrowing to float32 restores the exact bits.
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ServiceError) -> Response:
    return json_response({"error": exc.message}, exc.status_code, exc.headers)


def model_headers(served: ServedModel) -> dict[str, str]:
    return {
        "X-Model-Name": served.name,
        "X-Model-Version": str(served.version),
        "X-Model-Sha256": served.sha256,
    }
