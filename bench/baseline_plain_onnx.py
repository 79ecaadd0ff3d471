"""The plain way to serve an imported ONNX model with FastAPI: the control for imported models (the app:
plain_app.py).

One onnxruntime session with the same pinned options as invariant-serve's executor (CPU, 1 + 1 threads,
sequential, the same optimization level), one `session.run` per request on the whole request (no padding,
no batching). Run: `BENCH_MODEL_DIR=<repository>/<name>/<version> uvicorn --app-dir bench baseline_plain_onnx:app`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from plain_app import plain_app

VERSION_DIR = Path(os.environ["BENCH_MODEL_DIR"])
MANIFEST = json.loads((VERSION_DIR / "manifest.json").read_text())
NAME, LABELS, SHAPE = MANIFEST["name"], MANIFEST["class_labels"], tuple(MANIFEST["input"]["shape"])
_options = ort.SessionOptions()
_options.intra_op_num_threads = _options.inter_op_num_threads = 1
_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
SESSION = ort.InferenceSession(str(VERSION_DIR / "model.onnx"), _options, providers=["CPUExecutionProvider"])
INPUT = SESSION.get_inputs()[0].name


def forward(instances: list[list[float]]) -> tuple[list[int], list[list[float]], list[list[float]]]:
    rows = np.asarray(instances, dtype=np.float32).reshape(-1, *SHAPE)
    (logits,) = SESSION.run(None, {INPUT: rows})
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return [int(i) for i in logits.argmax(axis=1)], probabilities.tolist(), logits.tolist()


app = plain_app(NAME, None, LABELS, forward)
