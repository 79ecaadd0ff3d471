"""Baseline (b): the framework's own ceiling.

A FastAPI endpoint that reads the raw body, parses it with orjson (the fastest parser the service uses)
and answers a constant JSON: no validation, no model. Run by uvicorn with the same workers, loop (uvloop)
and HTTP parser (httptools) as the service: `uvicorn --app-dir bench baseline_ceiling:app`.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

# Telemetry off, as in invariant-serve: the same framework configuration for every server.
app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

CONSTANT = orjson.dumps({"model_name": "digits", "model_version": "1", "predictions": []})


@app.get("/v2/health/ready")
async def ready() -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


@app.post("/v1/models/{name}:predict")
async def predict(request: Request, name: str) -> Response:
    orjson.loads(await request.body())
    return Response(CONSTANT, media_type="application/json")
