"""The FastAPI app shared by the plain baselines (baseline_plain.py: torch; baseline_plain_onnx.py: onnxruntime):
a pydantic body model (`instances: list[list[float]]`), one forward per request on the event loop, FastAPI's
default JSON response, answers like our V1 route (label, probabilities, logits). Only the forward differs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

# rows (n, features) -> (class index (n,), probabilities (n, classes), logits (n, classes)), as Python lists
Forward = Callable[[list[list[float]]], tuple[list[int], list[list[float]], list[list[float]]]]


class PredictRequest(BaseModel):
    instances: list[list[float]]


def plain_app(model_name: str, version: str | None, labels: Sequence[str], forward: Forward) -> FastAPI:
    """`version` None: answers carry no model_version (as the ONNX control always did)."""
    # Telemetry off, as in invariant-serve: the same framework configuration for every server.
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        if name != model_name:
            raise HTTPException(404, f"unknown model {name!r}")
        index, probabilities, logits = forward(body.instances)
        answer: dict[str, Any] = {"model_name": model_name}
        if version is not None:
            answer["model_version"] = version
        answer["predictions"] = [
            {"label": labels[i], "probabilities": p, "logits": z}
            for i, p, z in zip(index, probabilities, logits, strict=True)
        ]
        return answer

    return app
