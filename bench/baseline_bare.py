"""Baseline (c): the bare ASGI ceiling, no framework at all.

A raw ASGI app answering the predict route with a constant JSON (it reads the body and parses it with orjson,
as every server here must): what uvicorn with uvloop and httptools can do on this machine, the number a
Python server's requests per core are measured against. `uvicorn --app-dir bench baseline_bare:app`.
"""

from __future__ import annotations

from typing import Any

import orjson

CONSTANT = orjson.dumps({"model_name": "digits", "model_version": "1", "predictions": []})
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(CONSTANT)).encode())]
READY = b'{"ready":true}'
READY_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(READY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        orjson.loads(body)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": CONSTANT})
        return
    await send({"type": "http.response.start", "status": 200, "headers": READY_HEADERS})
    await send({"type": "http.response.body", "body": READY})
