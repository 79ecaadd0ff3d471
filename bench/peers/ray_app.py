"""Ray Serve with @serve.batch: max_batch_size 64, batch_wait_timeout_s 2 ms, one replica,
max_ongoing_requests 64 (its default of 5 caps every batch at 5). POST / {"row": [...]}."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray
from peer_model import DigitsModel
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
class Digits:
    def __init__(self) -> None:
        self.model = DigitsModel()

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def predict(self, rows: list[list[float]]) -> list[list[float]]:
        return [row.tolist() for row in self.model.logits(np.asarray(rows, dtype=np.float32))]

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {"logits": await self.predict((await request.json())["row"])}


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": dict(os.environ)})
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["PEER_PORT"])})
    serve.run(Digits.bind(), route_prefix="/")  # type: ignore[attr-defined]
    print("PEER READY", flush=True)
    while True:
        time.sleep(3600)
