"""MLServer custom runtime (V2 inference protocol); adaptive batching is configured in model-settings.json."""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_model import DigitsModel


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        self.model = DigitsModel()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)  # (N, 64): the merged batch
        logits = self.model.logits(rows)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("logits", logits)])
