"""Open Inference Protocol model-repository extension (as Triton and MLServer serve it).

`POST /v2/repository/index` lists every version on disk or loaded with its state and reason;
`POST /v2/repository/models/{name}/load` and `/unload` change what serves, in explicit model control only.
Admin routes (routes.py): they change what every client is served.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.errors import BadRequest
from service.protocols.wire import BodyReader, json_response, parse_json_object

# Request bodies here are tiny ({"ready": true}, {"parameters": {...}}); anything larger is not ours.
MAX_BODY_BYTES = 64 * 1024


class RepositoryApi:
    def __init__(self, plane: DataPlane, reader: BodyReader) -> None:
        self.plane = plane
        self.reader = reader  # bounded to MAX_BODY_BYTES by the route table

    async def index(self, request: Request) -> Response:
        body = await _optional_body(self.reader, request)
        ready_only = body.get("ready", False)
        if not isinstance(ready_only, bool):
            raise BadRequest(f'"ready" must be true or false, got {ready_only!r}')
        return json_response([entry.to_json() for entry in await self.plane.index(ready_only)])

    async def load(self, request: Request) -> Response:
        name = request.path_params["name"]
        parameters = _parameters(await _optional_body(self.reader, request))
        if parameters:
            raise BadRequest(
                f"load parameters are not supported ({sorted(parameters)}): "
                "versions load from the repository on disk, as the version policy picks them"
            )
        versions = await self.plane.load(name)
        return json_response({"name": name, "versions": [str(v) for v in versions]})

    async def unload(self, request: Request) -> Response:
        name = request.path_params["name"]
        parameters = _parameters(await _optional_body(self.reader, request))
        unknown = sorted(set(parameters) - {"unload_dependents"})  # tritonclient always sends it; no ensembles here
        if unknown:
            raise BadRequest(f"unload parameters are not supported: {unknown}")
        await self.plane.unload(name)
        return json_response({"name": name, "versions": []})


async def _optional_body(reader: BodyReader, request: Request) -> dict[str, Any]:
    raw = await reader.read(request)
    return parse_json_object(raw) if raw else {}  # whitespace is not "no body": it is malformed JSON (fuzz)


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be a JSON object')
    return parameters
