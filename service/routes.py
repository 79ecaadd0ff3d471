"""The one route table: every path the server answers, who may call it, and what /openapi.json says about it.

Both ways in read it: the front door (hotpath.py) matches each request against it, checks the caller's key
for the route's access level (auth.py), and answers `hot` routes itself; FastAPI's router is built from the
same rows for everything else (and for the hot routes too with --no-front-door). Adding a route is one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from service import api_schemas as doc
from service.auth import ADMIN, INFERENCE, PUBLIC, Access
from service.docs import ASSETS, DocsApi
from service.http import Handler
from service.inference import Inference
from service.metrics import Metrics
from service.repository_api import RepositoryApi
from service.settings import Settings
from service.v1 import V1Api
from service.v2 import V2Api


@dataclass(frozen=True)
class Route:
    method: str  # GET also answers HEAD
    path: str  # Starlette syntax: "{name}" matches one path segment
    handler: Handler
    access: Access
    doc: doc.Doc
    hot: bool = False  # answered by the front door before FastAPI's routing (the request rate is here)
    path_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the only values a parameter takes


def route_table(inference: Inference, metrics: Metrics, settings: Settings, docs: DocsApi) -> tuple[Route, ...]:
    """Every route, hot ones first (the front door tries them in order)."""
    v1, v2, repository = V1Api(inference), V2Api(inference), RepositoryApi(inference.registry)
    metrics_access = ADMIN if settings.protect_metrics else PUBLIC
    return (
        Route("POST", "/v1/models/{name}:predict", v1.predict, INFERENCE, doc.V1_PREDICT, hot=True),
        Route("POST", "/v1/models/{name}/versions/{version}:predict", v1.predict, INFERENCE, doc.V1_PREDICT, hot=True),
        Route("POST", "/v2/models/{name}/infer", v2.infer, INFERENCE, doc.V2_INFER, hot=True),
        Route("POST", "/v2/models/{name}/versions/{version}/infer", v2.infer, INFERENCE, doc.V2_INFER, hot=True),
        Route("GET", "/", v1.live, PUBLIC, doc.V1_LIVE),
        Route("GET", "/v1/models", v1.list_models, INFERENCE, doc.V1_MODELS),
        Route("GET", "/v1/models/{name}", v1.model_status, INFERENCE, doc.V1_MODEL),
        Route("GET", "/v2", v2.server_metadata, INFERENCE, doc.V2_SERVER),
        Route("GET", "/v2/health/live", v2.live, PUBLIC, doc.V2_LIVE),
        Route("GET", "/v2/health/ready", v2.ready, PUBLIC, doc.V2_READY),
        Route("GET", "/v2/models/{name}", v2.model_metadata, INFERENCE, doc.V2_MODEL),
        Route("GET", "/v2/models/{name}/versions/{version}", v2.model_metadata, INFERENCE, doc.V2_MODEL),
        Route("GET", "/v2/models/{name}/ready", v2.model_ready, INFERENCE, doc.V2_MODEL_READY),
        Route("GET", "/v2/models/{name}/versions/{version}/ready", v2.model_ready, INFERENCE, doc.V2_MODEL_READY),
        Route("POST", "/v2/repository/index", repository.index, ADMIN, doc.REPOSITORY_INDEX),
        Route("POST", "/v2/repository/models/{name}/load", repository.load, ADMIN, doc.REPOSITORY_LOAD),
        Route("POST", "/v2/repository/models/{name}/unload", repository.unload, ADMIN, doc.REPOSITORY_UNLOAD),
        Route("GET", "/metrics", _metrics_handler(metrics), metrics_access, doc.METRICS),
        # The API's description is public: a browser cannot send a key while loading the page.
        Route("GET", "/openapi.json", docs.openapi, PUBLIC, doc.OPENAPI),
        Route("GET", "/docs", docs.page, PUBLIC, doc.DOCS_PAGE),
        Route("GET", "/docs/{asset}", docs.asset, PUBLIC, doc.DOCS_ASSET, path_values={"asset": ASSETS}),
    )


def _metrics_handler(metrics: Metrics) -> Handler:
    async def prometheus_metrics(_request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return prometheus_metrics
