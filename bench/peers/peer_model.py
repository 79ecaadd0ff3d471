"""The model every peer serves: the bench's digits checkpoint, eval mode, one torch thread, plain
`model(batch)` on whatever batch the peer's batcher hands over (that is how each peer documents it).

Each peer's app imports this; the bench sets PEER_CHECKPOINT (a version directory) and puts the project root
on PYTHONPATH so `models` (the project's checkpoint loader) imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import load_checkpoint

torch.set_num_threads(1)


class DigitsModel:
    def __init__(self) -> None:
        self.model, manifest = load_checkpoint(Path(os.environ["PEER_CHECKPOINT"]))
        self.model.eval()
        self.input_shape = manifest.input.shape

    def logits(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """rows (N, 64) float32 -> logits (N, 10) float32, one forward on the whole batch."""
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).reshape(-1, *self.input_shape)
            result: np.ndarray[Any, Any] = self.model(batch).numpy()
            return result
