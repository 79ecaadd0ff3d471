"""BentoML with a batchable API: max_batch_size 64, max_latency_ms 1000 (its docs' value: a smaller budget
answers 503 to requests it predicts will miss it), one worker. POST /predict {"rows": [[...]]}."""

from __future__ import annotations

import bentoml
import numpy as np
from peer_model import DigitsModel


@bentoml.service(workers=1)
class Digits:
    def __init__(self) -> None:
        self.model = DigitsModel()

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def predict(self, rows: np.ndarray) -> np.ndarray:  # BentoML reads the bare ndarray annotation
        return self.model.logits(rows)
