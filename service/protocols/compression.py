"""Compressed bodies both ways, as Triton does (tritonclient's request/response_compression_algorithm).

Requests with `Content-Encoding: gzip` or `deflate` are inflated with a cap on the result, so a gzip bomb
costs no more than an honest body at the limit. Responses are compressed when `Accept-Encoding` asks.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import Message, Scope, Send

from service.errors import BadRequest, PayloadTooLarge

# wbits for zlib: a gzip member, or zlib-wrapped deflate (what HTTP's "deflate" means and tritonclient sends).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
REQUEST_ENCODINGS = frozenset(_WBITS)
# Below this, compressing costs more than it saves; above the second, it runs beside the event loop.
MIN_RESPONSE_BYTES = 1024
THREAD_RESPONSE_BYTES = 256 * 1024
LEVEL = 1  # fastest: inference answers are float text, where higher levels gain little


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """Decompress at most limit + 1 bytes; 413 past the limit, 400 for data that is not `encoding`."""
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"request body is not valid {encoding} data: {exc}") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"request body is truncated {encoding} data")
    return body


def chosen_encoding(accept_encoding: str) -> str | None:
    """gzip or deflate if the client accepts it (gzip first), else None. `;q=0` refuses a coding."""
    accepted = set()
    for item in accept_encoding.lower().split(","):
        coding, _, parameters = item.partition(";")
        if parameters.replace(" ", "") not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}:
            accepted.add(coding.strip())
    return next((coding for coding in ("gzip", "deflate") if coding in accepted), None)


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        packer = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return packer.compress(body) + packer.flush()
    return zlib.compress(body, LEVEL)


def compressing(scope: Scope, send: Send) -> Send:
    """`send`, or a sender that compresses a whole-body answer when the request's Accept-Encoding allows it.
    Requests that do not ask get `send` itself: no wrapper on the hot path."""
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            encoding = chosen_encoding(value.decode("latin-1"))
            return send if encoding is None else _CompressingSender(send, encoding)
    return send


class _CompressingSender:
    def __init__(self, send: Send, encoding: str) -> None:
        self.send = send
        self.encoding = encoding
        self.start: Message | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message  # held until the body shows whether to compress
            return
        start, self.start = self.start, None
        if start is None or message["type"] != "http.response.body":
            if start is not None:
                await self.send(start)
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        headers = list(start.get("headers", []))
        encoded = any(name.lower() == b"content-encoding" for name, _ in headers)
        if message.get("more_body", False) or encoded or len(body) < MIN_RESPONSE_BYTES:
            await self.send(start)
            await self.send(message)
            return
        if len(body) < THREAD_RESPONSE_BYTES:
            packed = compress(body, self.encoding)
        else:
            packed = await asyncio.to_thread(compress, body, self.encoding)  # zlib releases the GIL
        headers = [(name, value) for name, value in headers if name.lower() != b"content-length"]
        headers += [
            (b"content-encoding", self.encoding.encode()),
            (b"content-length", str(len(packed)).encode()),
            (b"vary", b"Accept-Encoding"),
        ]
        await self.send({**start, "headers": headers})
        await self.send({**message, "body": packed})
