"""The dispatcher: the ASGI application uvicorn runs, and the one way in for every request.

Per request, in this order and nowhere else: match the route table (routes.py) -> check the key for the
route's access level (auth.py) -> 405/404 -> call the row's handler -> render any error as {"error": ...} ->
count inference calls with the status actually sent -> one access log line (route template, never the raw
path) -> echo X-Request-Id -> compress the answer if asked. There is no framework
router or middleware stack around it: those cost more per request than decoding and batching a row (about
half of the event loop's time in the py-spy profile of the benchmark), and a second router over the same
table could disagree with this one.

Inference routes (those with a `protocol`) take the hot path, `_inference`: the handler gets an Exchange
(the scope, receive, path parameters and the call's record) and returns a Reply that is sent as two raw
ASGI messages, with no Starlette Request or Response built (service/protocols/exchange.py). The steps
around the handler are the same on both paths, in the same order.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.dataplane import CallRecord
from service.errors import MethodNotAllowed, NotFound, ServiceError
from service.http.auth import Guard
from service.http.routes import Route
from service.observability.logs import REQUEST_ID_HEADER, AccessLog, request_id_of
from service.observability.metrics import Metrics
from service.protocols.compression import compressing
from service.protocols.exchange import Exchange, error_reply, json_reply, send_reply
from service.protocols.wire import WHOLE_ANSWER, error_response, json_response

log = logging.getLogger("invariant.dispatch")
MATCHES_KEPT = 1024  # (method, path) pairs whose route is remembered (Dispatcher.match)
MATCHED_PATH_CHARS = 256  # longer paths are matched every time, not remembered


class Dispatcher:
    def __init__(
        self,
        routes: Sequence[Route],
        guard: Guard,
        metrics: Metrics,
        lifespan: ASGIApp,
        call_record: Callable[[str, str], CallRecord],
        access_log: AccessLog,
    ) -> None:
        self.routes = tuple(routes)
        self.call_record = call_record  # (protocol, model name in the path) -> the call's metric labels
        self.guard = guard
        self.metrics = metrics
        self.lifespan = lifespan
        self.access_log = access_log
        # Starlette's own path compiler: "{name}" matches one path segment.
        self._patterns: list[tuple[str, re.Pattern[str], Route]] = [
            (r.path, compile_path(r.path)[0], r) for r in self.routes
        ]
        # (method, path) -> match()'s answer: the table never changes, and a request's path is one of a few
        # (a route per model) far more often than not. Cleared when full: a client sending ever new paths
        # costs a walk of the table per request, as without it, and never more than MATCHES_KEPT entries.
        self._matches: dict[tuple[str, str], tuple[Route | None, dict[str, Any], list[str]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            sender = compressing(scope, send)
            # One message per answer to our own uvicorn protocol, unless compression wraps the sender.
            await self._http(scope, receive, sender, sender is send and WHOLE_ANSWER in scope)
        elif kind == "lifespan":
            await self.lifespan(scope, receive, send)
        else:  # websocket: no route speaks it; refused before anything reads it
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send, whole_answer: bool) -> None:
        started = time.perf_counter()
        request_id = request_id_of(scope["headers"])
        route, params, allowed = self.match(scope["method"], _route_path(scope))
        refusal = self.guard.refusal(scope, route.access if route else None)  # before 404/405: reveals nothing
        if route is not None and refusal is None and route.protocol is not None:
            await self._inference(route, params, scope, receive, send, started, request_id, whole_answer)
            return
        if route is None or refusal is not None:
            response = refusal or _no_route(allowed)
        else:
            scope["path_params"] = params
            response = await _respond(route, Request(scope, receive))
        response.headers[REQUEST_ID_HEADER] = request_id
        if self.access_log.enabled:
            self.access_log.record(
                partial(_access_fields, scope["method"], route, response.status_code, request_id, None), started
            )
        await response(scope, receive, send)

    async def _inference(
        self, route: Route, params: dict[str, Any], scope: Scope, receive: Receive, send: Send, started: float,
        request_id: str, whole_answer: bool,
    ) -> None:  # fmt: skip
        """The hot path (V1 predict, V2 infer): no framework object; the same metrics, log line and headers."""
        protocol = route.protocol or ""
        call = self.call_record(protocol, params.get("name", ""))
        call.request_id = request_id
        try:
            reply = await route.inference_handler(Exchange(scope, receive, params, call))
        except ServiceError as exc:
            reply = error_reply(exc)
        except Exception:
            log.exception("unhandled error on %s %s", route.method, route.path)  # the template: no client input
            reply = json_reply({"error": "internal server error"}, 500)
        self.metrics.record_request(call.name, call.version, protocol, reply.status, started)
        if self.access_log.enabled:
            # The line's fields are made at the end of the loop's iteration, with the others (logs.py).
            self.access_log.record(
                partial(_access_fields, scope["method"], route, reply.status, request_id, call), started
            )
        await send_reply(send, reply, request_id, whole_answer)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, Any], list[str]]:
        """(route, path parameters, []) for the route serving (method, path); (None, {}, methods) when the path
        is served for other methods only (405); (None, {}, []) when no route serves it (404).

        The first path template in table order that matches owns the path: "/v1/models/tiny:predict" belongs
        to predict (so GET gets 405) although "/v1/models/{name}" would also match it.
        """
        if len(path) > MATCHED_PATH_CHARS:  # never remembered: the memory held stays small whatever comes
            return self._walk(method, path)
        key = (method, path)
        found = self._matches.get(key)
        if found is None:
            if len(self._matches) >= MATCHES_KEPT:
                self._matches.clear()
            found = self._matches[key] = self._walk(method, path)
        route, params, allowed = found
        return route, dict(params), list(allowed)  # the caller's own: a handler may change them

    def _walk(self, method: str, path: str) -> tuple[Route | None, dict[str, Any], list[str]]:
        owner: str | None = None
        params: dict[str, Any] = {}
        allowed: list[str] = []
        for template, pattern, route in self._patterns:
            if owner is None:
                found = pattern.fullmatch(path)  # `$` would also match before a final "\n"
                if found is None:
                    continue
                owner, params = template, found.groupdict()
            if template != owner:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, []
            allowed += [route.method, "HEAD"] if route.method == "GET" else [route.method]
        return None, {}, allowed


def _access_fields(
    method: str, route: Route | None, status: int, request_id: str, call: CallRecord | None
) -> dict[str, Any]:
    """The access line's fields: only values the server defines, and the checked request id."""
    method = method if method in _METHODS else "OTHER"
    path = route.path if route is not None else "-"  # the template: the raw path may hold anything
    if call is None:
        return {"method": method, "route": path, "status": status, "request_id": request_id}
    timing = call.timing
    return {
        "method": method,
        "route": path,
        "status": status,
        "request_id": request_id,
        "protocol": call.protocol,
        "model": call.name,
        "version": call.version,
        "rows": call.rows,
        "queue_ms": round(timing.queue_s * 1000, 3),
        "compute_ms": round(timing.compute_s * 1000, 3),
    }


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def _route_path(scope: Scope) -> str:
    """The path the table matches: without the root path a proxy mounts the server under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _no_route(allowed: list[str]) -> Response:
    if allowed:  # the path is served, not for this method
        return error_response(MethodNotAllowed("Method Not Allowed", {"Allow": ", ".join(allowed)}))
    return error_response(NotFound("Not Found"))


async def _respond(route: Route, request: Request) -> Response:
    """The handler's answer, or its error rendered as {"error": ...} with the error's status."""
    try:
        return await route.framework_handler(request)
    except ServiceError as exc:
        return error_response(exc)
    except Exception:
        log.exception("unhandled error on %s %s", route.method, route.path)  # the template: no client input
        return json_response({"error": "internal server error"}, 500)
