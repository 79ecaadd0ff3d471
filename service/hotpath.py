"""The front door: the one way in. Every request is matched against the route table (routes.py) and its key
checked (auth.py) before anything else runs; only then is it answered.

Per request, FastAPI's routing, dependency solving and Starlette's middleware stack cost more than decoding
and batching a row (about half the event loop's time in the py-spy profile of the benchmark), so the front
door answers the `hot` routes (V1 predict, V2 infer) itself, with the same handlers, rendering errors the same
way. Everything else, and with --no-front-door everything, goes on to FastAPI's router, built from the same table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import Guard
from service.errors import MethodNotAllowed, ServiceError
from service.http import Handler, error_response, json_response
from service.routes import Route

log = logging.getLogger("invariant.hotpath")


class FrontDoor:
    def __init__(self, app: ASGIApp, routes: Sequence[Route], guard: Guard, answer_hot: bool) -> None:
        self.app = app
        self.guard = guard
        self.answer_hot = answer_hot
        # Starlette's own path compiler, so "{name}" matches exactly what the router matches.
        self.routes: list[tuple[str, re.Pattern[str], Route]] = [(r.path, compile_path(r.path)[0], r) for r in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # no route speaks it; refuse before anything reads it
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)  # lifespan
            return
        route, params, allowed = self.match(scope["method"], _route_path(scope))
        refusal = self.guard.refusal(scope, route.access if route else None)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if allowed:  # the path is served, not for this method: decided here, so FastAPI never guesses otherwise
            refusal = error_response(MethodNotAllowed("Method Not Allowed", {"Allow": ", ".join(allowed)}))
            await refusal(scope, receive, send)
            return
        if route is not None and route.hot and self.answer_hot:
            scope["path_params"] = params
            response = await _respond(route.handler, Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, Any], list[str]]:
        """(route, path parameters, []) for the route serving (method, path); (None, {}, methods) when the path
        is served for other methods only (405); (None, {}, []) when no route serves it (404 from FastAPI).

        The first path template in table order that matches owns the path: "/v1/models/tiny:predict" belongs
        to predict (so GET gets 405) although "/v1/models/{name}" would also match it.
        """
        owner: str | None = None
        params: dict[str, Any] = {}
        allowed: list[str] = []
        for template, pattern, route in self.routes:
            if owner is None:
                found = pattern.match(path)
                if found is None:
                    continue
                owner, params = template, found.groupdict()
            if template != owner:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, []
            allowed += [route.method, "HEAD"] if route.method == "GET" else [route.method]
        return None, {}, allowed


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path a proxy mounts the server under (as Starlette does)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _respond(handler: Handler, request: Request) -> Response:
    try:
        return await handler(request)
    except ServiceError as exc:
        return error_response(exc)
    except Exception:
        log.exception("unhandled error on %s", request.url.path)
        return json_response({"error": "internal server error"}, 500)
