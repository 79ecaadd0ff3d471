"""Closed-loop clients for the model-lifecycle checks (bench/lifecycle_bench.py and tests/test_swap_under_load.py).

Each client thread sends V2 infer requests of 1..max_rows rows drawn from a fixed pool, back to back, and
records what answered: status, `X-Model-Version`, the rows it sent and the logits it got. `check` then
compares every answered row, bitwise, with the solo answer (the row sent alone) of the version that answered.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Answer:
    client: int
    path: str
    sent_at: float  # time.monotonic()
    done_at: float
    status: int  # 0: no HTTP answer (connection error)
    version: str  # X-Model-Version, "" when absent
    indices: tuple[int, ...]  # pool rows sent
    logits: Rows | None  # (len(indices), K) float32, for 200 answers
    body: str  # the error text for non-200 answers


@dataclass
class Check:
    answers: int
    by_version: Counter[str]
    failures: list[Answer]
    mismatches: list[Answer]  # answered rows whose bits differ from that version's solo answer
    unchecked: list[Answer]  # 200 answers from a version without solo answers


def infer_body(rows: Rows) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.reshape(-1).tolist()}],
        "outputs": [{"name": "logits"}],
    }


def logits_of(response: httpx.Response) -> Rows:
    output = response.json()["outputs"][0]
    # JSON carries each float32 widened exactly to float64 in shortest form; narrowing restores the bits.
    return np.asarray(output["data"], dtype=np.float64).astype(np.float32).reshape(output["shape"])


def solo_answers(url: str, model: str, version: str, pool: Rows) -> Rows:
    """Each pool row sent alone to one version: the reference every batched answer must equal."""
    with httpx.Client(base_url=url, timeout=60) as http:
        rows = []
        for row in pool:
            response = http.post(f"/v2/models/{model}/versions/{version}/infer", json=infer_body(row[None]))
            response.raise_for_status()
            assert response.headers["X-Model-Version"] == version
            rows.append(logits_of(response)[0])
    return np.stack(rows)


@dataclass
class ClosedLoopClients:
    url: str
    pool: Rows  # (P, *input_shape)
    paths: list[str]  # one per client, e.g. "/v2/models/digits/infer"
    max_rows: int
    seed: int = 0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for client, path in enumerate(self.paths):
            thread = threading.Thread(target=self._run, args=(client, path), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        with self._lock:
            return list(self.answers)

    def count(self, version: str | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if version is None or (a.status == 200 and a.version == version))

    def first_answer_from(self, version: str) -> Answer | None:
        with self._lock:
            return min((a for a in self.answers if a.status == 200 and a.version == version), key=_done, default=None)

    def _run(self, client: int, path: str) -> None:
        rng = np.random.default_rng(self.seed + client)
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self._stop.is_set():
                count = int(rng.integers(1, self.max_rows + 1))
                indices = tuple(int(i) for i in rng.integers(0, len(self.pool), count))
                answer = self._send(http, client, path, indices)
                with self._lock:
                    self.answers.append(answer)

    def _send(self, http: httpx.Client, client: int, path: str, indices: tuple[int, ...]) -> Answer:
        sent = time.monotonic()
        try:
            response = http.post(path, json=infer_body(self.pool[list(indices)]))
        except httpx.HTTPError as exc:
            return Answer(client, path, sent, time.monotonic(), 0, "", indices, None, repr(exc))
        done = time.monotonic()
        version = response.headers.get("X-Model-Version", "")
        if response.status_code != 200:
            return Answer(client, path, sent, done, response.status_code, version, indices, None, response.text)
        return Answer(client, path, sent, done, 200, version, indices, logits_of(response), "")


def check(answers: list[Answer], solo: dict[str, Rows]) -> Check:
    failures = [a for a in answers if a.status != 200]
    mismatches, unchecked = [], []
    for answer in answers:
        if answer.status != 200 or answer.logits is None:
            continue
        reference = solo.get(answer.version)
        if reference is None:
            unchecked.append(answer)
        elif reference[list(answer.indices)].tobytes() != answer.logits.tobytes():
            mismatches.append(answer)
    by_version = Counter(a.version for a in answers if a.status == 200)
    return Check(len(answers), by_version, failures, mismatches, unchecked)


def _done(answer: Answer) -> float:
    return answer.done_at
