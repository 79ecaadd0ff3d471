"""Baseline (a): the plain way to serve the model with FastAPI.

A pydantic body model (`instances: list[list[float]]`), one eval-mode forward per request on the event
loop, FastAPI's default JSON response. Answers like our V1 route (label, probabilities, logits).
Run by uvicorn: `BENCH_REPOSITORY=DIR [BENCH_DEVICE=cuda] uvicorn --app-dir bench baseline_plain:app`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from models import list_versions, load_checkpoint

MODEL_NAME = os.environ.get("BENCH_MODEL", "digits")
REPOSITORY = Path(os.environ.get("BENCH_REPOSITORY", "model-repository"))
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")  # bench/gpu_check.py serves it on the GPU

torch.set_num_threads(1)
VERSION = max(list_versions(REPOSITORY, MODEL_NAME))
MODEL, MANIFEST = load_checkpoint(REPOSITORY / MODEL_NAME / str(VERSION))
MODEL.eval().to(DEVICE)
LABELS = MANIFEST.class_labels

# Telemetry off, as in invariant-serve: the same framework configuration for every server.
app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v1/models/{name}:predict")
async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
    if name != MODEL_NAME:
        raise HTTPException(404, f"unknown model {name!r}")
    with torch.inference_mode():
        # Flat rows reshaped to the model's input (a CNN's (1, H, W)), as ours accepts them.
        rows = torch.tensor(body.instances, dtype=torch.float32).reshape(-1, *MANIFEST.input.shape)
        logits = MODEL(rows.to(DEVICE))
        probabilities = torch.softmax(logits, dim=1)
        index = torch.argmax(logits, dim=1)
    return {
        "model_name": MODEL_NAME,
        "model_version": str(VERSION),
        "predictions": [
            {"label": LABELS[i], "probabilities": p, "logits": z}
            for i, p, z in zip(index.tolist(), probabilities.tolist(), logits.tolist(), strict=True)
        ],
    }
