"""LitServe with batching: max_batch_size 64, batch_timeout 2 ms, one worker. POST /predict {"row": [...]}."""

import os
from typing import Any

import litserve as ls
import numpy as np
from peer_model import DigitsModel


class DigitsAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = DigitsModel()

    # No annotation on `request`: LitServe builds its endpoint from it, and a string annotation (from
    # `from __future__ import annotations`) becomes a query parameter (422).
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        row: list[float] = request["row"]
        return row

    def batch(self, inputs: list[list[float]]) -> np.ndarray[Any, Any]:
        return np.asarray(inputs, dtype=np.float32)

    def predict(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return self.model.logits(rows)

    def unbatch(self, output: np.ndarray[Any, Any]) -> list[list[float]]:
        return [row.tolist() for row in output]

    def encode_response(self, logits: list[float]) -> dict[str, Any]:
        return {"logits": logits}


if __name__ == "__main__":
    api = DigitsAPI(max_batch_size=64, batch_timeout=0.002)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=int(os.environ["PEER_PORT"]), host="127.0.0.1", generate_client_file=False)
