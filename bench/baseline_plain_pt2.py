"""The plain way to serve a torch.export program with FastAPI: the control for imported .pt2 models (the app:
plain_app.py).

`torch.export.load(path).module()` as its documentation shows (this trusts the file: run it only on an
archive you exported yourself; invariant-serve never does this with a user's file), eval-mode calls under
`torch.inference_mode()` on one thread as ours, one forward per request on the whole request (no padding, no
batching). Run: `BENCH_MODEL_DIR=<repository>/<name>/<version> uvicorn --app-dir bench baseline_plain_pt2:app`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from plain_app import plain_app

VERSION_DIR = Path(os.environ["BENCH_MODEL_DIR"])
MANIFEST = json.loads((VERSION_DIR / "manifest.json").read_text())
NAME, LABELS, SHAPE = MANIFEST["name"], MANIFEST["class_labels"], tuple(MANIFEST["input"]["shape"])
torch.set_num_threads(1)
MODULE = torch.export.load(str(VERSION_DIR / "model.pt2")).module()


def forward(instances: list[list[float]]) -> tuple[list[int], list[list[float]], list[list[float]]]:
    with torch.inference_mode():
        rows = torch.tensor(instances, dtype=torch.float32).reshape(-1, *SHAPE)  # (n, *input shape)
        logits = MODULE(rows)  # (n, classes)
        probabilities = torch.softmax(logits, dim=1)
        index = torch.argmax(logits, dim=1)
    return index.tolist(), probabilities.tolist(), logits.tolist()


app = plain_app(NAME, None, LABELS, forward)
