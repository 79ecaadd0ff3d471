"""The one route table: every path the server answers, who may call it, and what /openapi.json says about it.

The dispatcher (dispatch.py) matches each request against it, checks the caller's key for the route's access
level (auth.py), and calls the row's handler; there is no other router. Adding a route is one row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from starlette.requests import Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.http import api_schemas as doc
from service.http.auth import ADMIN, INFERENCE, PUBLIC, Access
from service.http.docs import ASSETS, DocsApi
from service.observability.metrics import Metrics
from service.protocols.exchange import Exchange, Reply
from service.protocols.receipts_api import ReceiptsApi
from service.protocols.repository_api import MAX_BODY_BYTES as REPOSITORY_BODY_BYTES
from service.protocols.repository_api import RepositoryApi
from service.protocols.v1 import V1Api
from service.protocols.v2 import V2Api
from service.protocols.wire import BodyReader, Handler
from service.settings import Settings

# An inference route's handler: raw ASGI in and out (service/protocols/exchange.py), the hot path.
InferenceHandler = Callable[[Exchange], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    method: str  # GET also answers HEAD
    path: str  # Starlette syntax: "{name}" matches one path segment
    handler: Handler | InferenceHandler  # an InferenceHandler exactly when `protocol` is set
    access: Access
    doc: doc.Doc
    protocol: str | None = None  # inference routes: the `protocol` label their requests are counted under
    path_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the only values a parameter takes

    @property
    def framework_handler(self) -> Handler:
        """The handler of a route without `protocol`: Starlette's Request in, Response out."""
        return cast(Handler, self.handler)

    @property
    def inference_handler(self) -> InferenceHandler:
        """The handler of a route with `protocol`: an Exchange in, a Reply out."""
        return cast(InferenceHandler, self.handler)


def route_table(plane: DataPlane, metrics: Metrics, settings: Settings, docs: DocsApi) -> tuple[Route, ...]:
    """Every route, the inference ones first (the dispatcher tries them in order)."""
    reader = BodyReader(settings.max_body_bytes, settings.read_timeout_s, metrics)
    small_reader = BodyReader(REPOSITORY_BODY_BYTES, settings.read_timeout_s, metrics)
    v1, v2, repository = V1Api(plane, reader), V2Api(plane, reader), RepositoryApi(plane, small_reader)
    receipts = ReceiptsApi(plane, reader)  # a row may be as large as a predict's
    metrics_access = ADMIN if settings.protect_metrics else PUBLIC
    return (
        Route("POST", "/v1/models/{name}:predict", v1.predict, INFERENCE, doc.V1_PREDICT, protocol="v1"),
        Route(
            "POST", "/v1/models/{name}/versions/{version}:predict", v1.predict, INFERENCE, doc.V1_PREDICT, protocol="v1"
        ),
        Route(
            "POST",
            "/v1/models/{name}/labels/{label}:predict",
            v1.predict,
            INFERENCE,
            doc.V1_PREDICT_LABEL,
            protocol="v1",
        ),
        Route("POST", "/v2/models/{name}/infer", v2.infer, INFERENCE, doc.V2_INFER, protocol="v2"),
        Route("POST", "/v2/models/{name}/versions/{version}/infer", v2.infer, INFERENCE, doc.V2_INFER, protocol="v2"),
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
        # An API key may verify: a client holds its receipts and rows, and a check costs one C-row forward.
        Route("POST", "/v2/receipts/verify", receipts.verify, INFERENCE, doc.RECEIPTS_VERIFY),
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
