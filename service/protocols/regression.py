"""Serving a regression model (manifest task "regression"): one output, the standardized target, answered as
`value` = output * std + mean with the training split's statistics from the manifest. Computed in float64
from the executor's float32 output row by row, so a value is as batch-independent as the output it comes
from. V1 answers {"value": v, "logits": [output]} per row; V2 has the outputs `value` (FP64, shape [N]) and
`logits` (FP32, [N, 1])."""

from __future__ import annotations

from typing import Any

import numpy as np

from models import Manifest
from service.engine.types import Outputs

REGRESSION_OUTPUTS = {"value": "FP64", "logits": "FP32"}


def is_regression(manifest: Manifest) -> bool:
    return manifest.task == "regression"


def values(manifest: Manifest, outputs: Outputs) -> np.ndarray[Any, np.dtype[np.float64]]:
    """(N,) float64: the model's (N, 1) output in the target's units."""
    target = manifest.target
    assert target is not None  # models.checkpoint refuses a regression manifest without one
    return outputs.logits[:, 0].astype(np.float64) * target.std + target.mean


def v1_predictions(manifest: Manifest, outputs: Outputs) -> list[dict[str, Any]]:
    """[{"value": v, "logits": [output]}] per row (the logits let the invariance probe compare bits)."""
    logits = outputs.logits.tolist()
    return [{"value": value, "logits": logits[row]} for row, value in enumerate(values(manifest, outputs).tolist())]


def v2_tensors(manifest: Manifest, outputs: Outputs) -> dict[str, np.ndarray[Any, Any]]:
    return {"value": values(manifest, outputs), "logits": outputs.logits}
