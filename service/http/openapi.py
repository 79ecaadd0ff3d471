"""The OpenAPI document, built from the route table (routes.py) and the docs in api_schemas.py.

FastAPI's own generator sees only its routes' signatures: it would miss that predict and infer read raw bodies,
and list a 422 that the server never sends. Here every route of the table appears, with the answers its
handlers and the access check really give.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from service.http.api_schemas import ERROR_MEANINGS, JSON, SCHEMAS, Doc
from service.http.auth import ADMIN, PUBLIC

if TYPE_CHECKING:
    from service.http.routes import Route

SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "A key from --api-keys-file"},
    "adminKey": {"type": "http", "scheme": "bearer", "description": "A key from --admin-keys-file"},
}
_PATH_PARAMETER = re.compile(r"{(\w+)}")


def build_openapi(routes: Iterable[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "invariant-serve",
            "version": version,
            "description": "Every prediction is bitwise independent of the request batch. Errors are "
            '`{"error": "..."}`. With API keys configured, send `Authorization: Bearer <key>`.',
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(route: Route) -> dict[str, Any]:
    doc = route.doc
    operation: dict[str, Any] = {
        "summary": doc.summary,
        "tags": [doc.tag],
        "operationId": f"{route.method.lower()}_{route.handler.__name__}_{_slug(route.path)}",
        "responses": _responses(route),
    }
    if doc.description:
        operation["description"] = doc.description
    parameters = [_path_parameter(name, route) for name in _PATH_PARAMETER.findall(route.path)]
    if doc.binary:
        parameters.append(_BINARY_HEADER)
    if parameters:
        operation["parameters"] = parameters
    if doc.request:
        content: dict[str, Any] = {JSON: {"schema": _ref(doc.request)}}
        if doc.binary:
            content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        operation["requestBody"] = {"required": not doc.optional_body, "content": content}
    if route.access != PUBLIC:
        operation["security"] = [{"adminKey": []}] if route.access == ADMIN else [{"apiKey": []}, {"adminKey": []}]
    return operation


def _responses(route: Route) -> dict[str, Any]:
    doc = route.doc
    responses: dict[str, Any] = {"200": _success(doc)}
    statuses = set(doc.errors)
    if route.access != PUBLIC:
        statuses.add(401)
    if route.access == ADMIN:
        statuses.add(403)
    for status in sorted(statuses):
        answer: dict[str, Any] = {
            "description": ERROR_MEANINGS[status],
            "content": {JSON: {"schema": _ref("Error")}},
        }
        if status == 401:
            answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}
        responses[str(status)] = answer
    return responses


def _success(doc: Doc) -> dict[str, Any]:
    schema = _ref(doc.response) if doc.response else {}
    content: dict[str, Any] = {doc.media: {"schema": schema}}
    if doc.binary:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    answer: dict[str, Any] = {"description": "OK", "content": content}
    if doc.model_headers:
        header = {"schema": {"type": "string"}, "required": True}
        answer["headers"] = {name: header for name in ("X-Model-Name", "X-Model-Version", "X-Model-Sha256")}
    return answer


def _path_parameter(name: str, route: Route) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if route.path_values.get(name):
        schema["enum"] = list(route.path_values[name])
    return {"name": name, "in": "path", "required": True, "schema": schema}


_BINARY_HEADER = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "Binary tensor extension: the body is this many bytes of JSON, then the raw tensors",
    "schema": {"type": "integer", "minimum": 0},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")
