"""The probe (service/guarantee/probe.py) over HTTP, as a client sees the server: the invariance check of a served
model through the V1 API, the V2 cross-check, and the replica comparison. Stdlib HTTP plus numpy, no torch:
deploy/invariance_check.py, deploy/replica_check.py and the tests use it against running servers.

C and the input shape come from the server's V2 model metadata (`parameters.chunk_rows`, `inputs[0].shape`):
the probe's batch sizes are the ones around the C that server runs, never a default.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.guarantee.probe import (
    FINITE_CO_ROW_KINDS,
    Float32Array,
    ProbeReport,
    answers_digest,
    probe_rows,
    run_probe,
)

PREDICTION_FIELDS = ("logits", "probabilities")  # float32 vectors; plus the label


class ProbeError(Exception):
    """A request failed, or an answer was not what the protocol says."""


@dataclass(frozen=True)
class Answer:
    body: Any
    headers: dict[str, str]  # lower-case names


def prediction_bits(prediction: dict[str, Any]) -> bytes:
    """A V1 prediction's exact bits. The server writes each float32 as the shortest decimal that reads back
    to the same float64, so narrowing the parsed JSON to float32 restores the bits it computed. A regression
    prediction is its float64 value and its float32 output."""
    if "value" in prediction:
        return np.float64(prediction["value"]).tobytes() + np.asarray(prediction.get("logits"), np.float32).tobytes()
    missing = [f for f in (*PREDICTION_FIELDS, "label") if f not in prediction]
    if missing:
        raise ProbeError(f"prediction lacks {missing}: {str(prediction)[:200]}")
    vectors = b"".join(np.asarray(prediction[f], dtype=np.float32).tobytes() for f in PREDICTION_FIELDS)
    return vectors + json.dumps(prediction["label"]).encode()


@dataclass(frozen=True)
class ModelProbe:
    """What the probe needs to know about a served model, from its V2 metadata."""

    name: str
    version: str  # the version whose metadata answered (X-Model-Version)
    chunk_rows: int
    input_shape: tuple[int, ...]  # one sample: (64,) for the digits MLP, (1, 8, 8) for a CNN
    input_name: str
    small_chunk_rows: int | None = None  # C_small of a proven shape pair: its batch sizes are probed too

    @property
    def shapes(self) -> tuple[int, ...]:
        return (self.chunk_rows,) if self.small_chunk_rows is None else (self.chunk_rows, self.small_chunk_rows)

    @classmethod
    def from_metadata(cls, metadata: Any, version: str) -> ModelProbe:
        try:
            parameters = metadata["parameters"]
            chunk_rows = int(parameters["chunk_rows"])
            small = parameters.get("small_chunk_rows")
            first_input = metadata["inputs"][0]
            shape = tuple(int(d) for d in first_input["shape"][1:])
            name, input_name = str(metadata["name"]), first_input["name"]
            return cls(name, version, chunk_rows, shape, input_name, None if small is None else int(small))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProbeError(f"model metadata lacks parameters.chunk_rows or inputs ({exc!r}): {metadata}") from exc


def bearer_headers(key_file: str | None) -> dict[str, str]:
    """The Authorization header for the first key in `key_file` (a keys file: one per line, # comments); none
    without a file. A file, not a flag: a key on the command line is readable by anyone in /proc."""
    if key_file is None:
        return {}
    with open(key_file, encoding="utf-8") as file:
        keys = [line.strip() for line in file if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ProbeError(f"no key in {key_file}")
    return {"Authorization": f"Bearer {keys[0]}"}


class ProbeClient:
    """V1/V2 requests to one base URL (a server, or a load balancer in front of replicas)."""

    def __init__(self, base_url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})

    def request(self, path: str, body: Any = None) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, headers=self.headers)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        where = f"{req.get_method()} {path}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as err:
            raise ProbeError(f"{where} -> HTTP {err.code}: {err.read()[:500].decode(errors='replace')}") from err
        except (urllib.error.URLError, OSError) as err:
            raise ProbeError(f"{where} failed: {err}") from err
        try:
            return Answer(json.loads(payload), headers)
        except ValueError as err:
            raise ProbeError(f"{where}: answer is not JSON: {payload[:200]!r}") from err

    def model(self, name: str, version: str | None = None) -> ModelProbe:
        answer = self.request(_model_path("v2", name, version))
        return ModelProbe.from_metadata(answer.body, answer.headers.get("x-model-version", version or "?"))

    def predict(self, name: str, version: str | None, rows: Float32Array) -> Answer:
        """V1 predict; checks the answer has one prediction per row and comes from the asked version."""
        path = _model_path("v1", name, version) + ":predict"
        answer = self.request(path, {"instances": rows.reshape(rows.shape[0], -1).tolist()})
        predictions = answer.body.get("predictions") if isinstance(answer.body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != rows.shape[0]:
            raise ProbeError(f"{path}: expected {rows.shape[0]} predictions, got {str(answer.body)[:200]}")
        answered = answer.headers.get("x-model-version")
        if version is not None and answered is not None and answered != version:
            raise ProbeError(f"{path}: asked for version {version}, answered by version {answered}")
        return answer

    def answers(self, name: str, version: str | None, rows: Float32Array) -> list[bytes]:
        return [prediction_bits(p) for p in self.predict(name, version, rows).body["predictions"]]


def _model_path(protocol: str, name: str, version: str | None) -> str:
    return f"/{protocol}/models/{name}" + (f"/versions/{version}" if version else "")


def check_invariance(client: ProbeClient, model: ModelProbe, version: str | None, seed: int = 0) -> ProbeReport:
    """The probe over V1 JSON: every case is one request. Finite co-rows only (JSON refuses NaN)."""
    return run_probe(
        lambda rows: client.answers(model.name, version, rows),
        model.input_shape,
        model.shapes,
        seed,
        FINITE_CO_ROW_KINDS,
    )


def check_v2_matches_v1(client: ProbeClient, model: ModelProbe, version: str | None, seed: int = 0) -> list[str]:
    """Sends probe rows through V2 infer and V1 predict: the float32 outputs must have the same bits.
    Returns the names of the compared outputs."""
    rows = probe_rows(model.input_shape, 3, seed)
    v1 = client.predict(model.name, version, rows).body["predictions"]
    tensor = {"name": model.input_name, "shape": [3, *model.input_shape], "datatype": "FP32"}
    body = {"id": "probe", "inputs": [{**tensor, "data": rows.ravel().tolist()}]}
    path = _model_path("v2", model.name, version) + "/infer"
    answer = client.request(path, body)
    outputs = {o.get("name"): o for o in answer.body.get("outputs", [])} if isinstance(answer.body, dict) else {}
    compared = []
    for field in PREDICTION_FIELDS:
        if field not in outputs:
            continue
        want = np.asarray([p[field] for p in v1], dtype=np.float32).tobytes()
        if np.asarray(outputs[field]["data"], dtype=np.float32).tobytes() != want:
            raise ProbeError(f"{path}: output {field!r} differs from V1's bits")
        compared.append(field)
    if not compared:
        raise ProbeError(f"{path}: none of the outputs {PREDICTION_FIELDS} in {str(answer.body)[:200]}")
    return compared


def replica_digest(client: ProbeClient, model: ModelProbe, version: str | None, seed: int = 0) -> tuple[str, Answer]:
    """The digest of the answers to a fixed set of probe rows (one request of C+1 rows, the same on every
    replica), and the answer, whose headers name the replica and its numerics fingerprint."""
    rows = probe_rows(model.input_shape, model.chunk_rows + 1, seed)
    answer = client.predict(model.name, version, rows)
    return answers_digest(prediction_bits(p) for p in answer.body["predictions"]), answer
