"""/openapi.json and /docs: Swagger UI from the pinned swagger-ui-bundle-v2 package, so the page renders offline
(FastAPI's default page loads its scripts from a CDN)."""

from __future__ import annotations

import mimetypes
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from service.errors import NotFound

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")

# validatorUrl null: otherwise Swagger UI sends the document to an online validator for its badge.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>invariant-serve API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true});
  </script>
</body>
</html>
"""


class DocsApi:
    def __init__(self) -> None:
        self.document: dict[str, Any] = {}  # set once the route table exists (it describes itself)
        self._rendered = b""
        self._assets: dict[str, bytes] = {}

    async def openapi(self, _request: Request) -> Response:
        if not self._rendered:
            self._rendered = orjson.dumps(self.document)
        return Response(self._rendered, media_type="application/json")

    async def page(self, _request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["asset"]
        if name not in ASSETS:  # a fixed list: no path from the URL ever reaches the file system
            raise NotFound(f"no docs asset {name!r}")
        if name not in self._assets:
            self._assets[name] = (swagger_ui_path / name).read_bytes()
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(self._assets[name], media_type=media_type, headers={"Cache-Control": "max-age=86400"})
