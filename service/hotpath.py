"""The front door for the two hot routes: V1 predict and V2 infer.

Per request, FastAPI's routing, dependency solving and Starlette's middleware stack cost more than decoding
and batching a row (about half the event loop's time in the py-spy profile of the benchmark). This ASGI
middleware matches the hot POST paths itself and calls the very same handlers that the routers register,
rendering errors the same way; every other request goes through FastAPI unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import MethodNotAllowed, ServiceError
from service.http import error_response, json_response

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("invariant.hotpath")


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: Sequence[tuple[str, Handler]]) -> None:
        self.app = app
        # Starlette's own path compiler, so "{name}" matches exactly what the router would match.
        self.routes: list[tuple[re.Pattern[str], Handler]] = [(compile_path(p)[0], h) for p, h in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for pattern, handler in self.routes:
                match = pattern.match(path)
                if match:
                    if scope["method"] != "POST":
                        # Also for GET: "/v1/models/{name}" would otherwise take "tiny:predict" as a name (404).
                        response = error_response(MethodNotAllowed("Method Not Allowed", {"Allow": "POST"}))
                    else:
                        scope["path_params"] = match.groupdict()
                        response = await _respond(handler, Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _respond(handler: Handler, request: Request) -> Response:
    try:
        return await handler(request)
    except ServiceError as exc:
        return error_response(exc)
    except Exception:
        log.exception("unhandled error on %s", request.url.path)
        return json_response({"error": "internal server error"}, 500)
