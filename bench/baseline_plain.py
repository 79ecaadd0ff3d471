"""Baseline (a): the plain way to serve the model with FastAPI (the app: plain_app.py).

One eval-mode torch forward per request on the event loop, on the whole request (no padding, no batching).
Run by uvicorn: `BENCH_REPOSITORY=DIR [BENCH_DEVICE=cuda] uvicorn --app-dir bench baseline_plain:app`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from plain_app import plain_app

from models import list_versions, load_checkpoint

MODEL_NAME = os.environ.get("BENCH_MODEL", "digits")
REPOSITORY = Path(os.environ.get("BENCH_REPOSITORY", "model-repository"))
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")  # bench/gpu_check.py serves it on the GPU

torch.set_num_threads(1)
VERSION = max(list_versions(REPOSITORY, MODEL_NAME))
MODEL, MANIFEST = load_checkpoint(REPOSITORY / MODEL_NAME / str(VERSION))
MODEL.eval().to(DEVICE)


def forward(instances: list[list[float]]) -> tuple[list[int], list[list[float]], list[list[float]]]:
    with torch.inference_mode():
        # Flat rows reshaped to the model's input (a CNN's (1, H, W)), as ours accepts them.
        rows = torch.tensor(instances, dtype=torch.float32).reshape(-1, *MANIFEST.input.shape)
        logits = MODEL(rows.to(DEVICE))
        probabilities = torch.softmax(logits, dim=1)
        index = torch.argmax(logits, dim=1)
    return index.tolist(), probabilities.tolist(), logits.tolist()


app = plain_app(MODEL_NAME, str(VERSION), MANIFEST.class_labels, forward)
