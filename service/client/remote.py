"""Talking to a server: the model's metadata, and one chunk of rows as a V2 binary infer request, retried
on 503 (queue full, loading) after the server's Retry-After. Standard library HTTP only: one keep-alive
connection per worker thread."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.client.table import ClientError, ModelInput
from service.engine.types import Float32Array, Int64Array

HEADER = "Inference-Header-Content-Length"
MAX_RETRIES = 30
MAX_RETRY_AFTER_S = 30.0
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServedVersion:
    name: str
    version: str
    chunk_rows: int
    fingerprint: str
    model: ModelInput


class Server:
    def __init__(self, url: str, api_key: str | None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ClientError(f"--url must be http://HOST:PORT or https://..., got {url!r}")
        self._scheme, self._host, self._port = parsed.scheme, parsed.hostname, parsed.port
        self._prefix = parsed.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()
        self.retries = 0  # 503s and dropped connections retried, all threads together
        self._lock = threading.Lock()

    def metadata(self, name: str, version: str | None) -> ServedVersion:
        """The version that will answer: pinned by number for the whole file, so a promotion or a new
        version while the file is scored never mixes two versions' answers."""
        path = f"/v2/models/{_quote(name)}" + (f"/versions/{_quote(version)}" if version else "")
        status, headers, body = self._request("GET", path, b"", {})
        if status != 200:
            raise ClientError(f"model metadata: HTTP {status}: {_error_of(body)}", 1)
        meta = json.loads(body)
        parameters = meta.get("parameters", {})
        if parameters.get("state") != "READY":
            raise ClientError(f"model {name!r} does not serve: {parameters.get('reason', '')}", 1)
        model = ModelInput(
            shape=tuple(int(n) for n in meta["inputs"][0]["shape"][1:]),
            feature_names=tuple(parameters.get("feature_names", ())),
            class_labels=tuple(parameters["class_labels"]),
        )
        chunk_rows = int(parameters.get("chunk_rows", 0))
        return ServedVersion(
            name, str(parameters["version"]), chunk_rows, headers.get("x-numerics-fingerprint", ""), model
        )

    def infer(self, served: ServedVersion, rows: Float32Array) -> tuple[Int64Array, Float32Array]:
        """(class_index (n,), probabilities (n, K)) of rows (n, *shape) from the pinned version."""
        raw = np.ascontiguousarray(rows, dtype="<f4").tobytes()
        request = {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(rows.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "class_index", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": True}},
            ],
        }
        header = json.dumps(request).encode()
        path = f"/v2/models/{_quote(served.name)}/versions/{served.version}/infer"
        extra = {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}
        status, headers, body = self._request("POST", path, header + raw, extra)
        if status != 200:
            raise ClientError(f"infer: HTTP {status}: {_error_of(body)}", 1)
        return _decode(body, headers, rows.shape[0], len(served.model.class_labels))

    def _request(self, method: str, path: str, body: bytes, extra: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(MAX_RETRIES + 1):
            try:
                connection = self._connection()
                connection.request(method, self._prefix + path, body=body, headers={**self._headers, **extra})
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if attempt == MAX_RETRIES:
                    raise ClientError(f"cannot reach the server: {exc}", 1) from None
                self._count_retry()
                time.sleep(min(0.1 * 2**attempt, 5.0))
                continue
            headers = {key.lower(): value for key, value in response.getheaders()}
            if response.status != 503 or attempt == MAX_RETRIES:
                return response.status, headers, payload
            self._count_retry()
            time.sleep(_retry_after(headers.get("retry-after")))
        raise AssertionError("unreachable")

    def _count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=TIMEOUT_S)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None


def _decode(body: bytes, headers: dict[str, str], rows: int, classes: int) -> tuple[Int64Array, Float32Array]:
    length = int(headers.get(HEADER.lower(), len(body)))
    reply: dict[str, Any] = json.loads(body[:length])
    blobs, offset = {}, length
    for output in reply["outputs"]:
        size = int(output["parameters"]["binary_data_size"])
        blobs[output["name"]] = body[offset : offset + size]
        offset += size
    class_index = np.frombuffer(blobs["class_index"], dtype="<i8").astype(np.int64)
    probabilities = np.frombuffer(blobs["probabilities"], dtype="<f4").astype(np.float32).reshape(rows, classes)
    if class_index.shape != (rows,):
        raise ClientError(f"the server answered {class_index.shape[0]} rows for {rows}", 1)
    return class_index, probabilities


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.05), MAX_RETRY_AFTER_S)


def _error_of(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])[:300]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
