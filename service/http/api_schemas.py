"""What /openapi.json says about each route: request and response bodies (JSON Schema) and the answers it gives.

The route table (routes.py) gives each route one of the `Doc`s below; openapi.py turns the table into the
document. The error statuses listed here are the ones the handlers really raise (service/errors.py); 401 and
403 are added by access level, so a route's doc never repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = "application/json"
V1_TAG, V2_TAG, OPS_TAG = "KServe V1", "Open Inference Protocol V2", "Operations"
REPOSITORY_TAG = "Model repository (admin)"
MODEL_ERRORS = (404,)
BODY_ERRORS = (400, 408, 413, 415)
INFERENCE_ERRORS = (*BODY_ERRORS, 404, 422, 503, 504)


@dataclass(frozen=True)
class Doc:
    summary: str
    tag: str = OPS_TAG
    response: str | None = None  # a schema in SCHEMAS for the JSON 200 answer; None: `media` with any body
    media: str = JSON
    request: str | None = None  # a schema in SCHEMAS for the JSON request body
    optional_body: bool = False  # the request body may be empty
    binary: bool = False  # also accepts and answers the V2 binary tensor extension
    model_headers: bool = False  # the 200 answer names the model that answered in X-Model-* headers
    errors: tuple[int, ...] = ()
    description: str = ""


ERROR_MEANINGS = {
    400: "The request is malformed; the message names what is wrong (the first bad row, field or value)",
    408: "The body did not arrive within --read-timeout-s (the connection is closed)",
    401: "No valid API key (only when the server runs with --api-keys-file or --admin-keys-file)",
    403: "An API key where this route needs an admin key",
    404: "Unknown model or version (the message lists the available ones)",
    413: "The body is over --max-body-bytes (also once decompressed), or holds more rows than --max-queue-rows",
    415: "A Content-Encoding other than gzip or deflate",
    422: "The model's output is not finite for the named rows (inputs too large for it): never a confident label",
    503: "The model is not ready, or its queue is full (then Retry-After says when to come back)",
    504: "Not answered within --request-timeout-s",
}

_NUMBERS = {"type": "array", "items": {"type": "number"}}
_ROW = {
    "description": "One row: a flat list of the model's input values, nested lists shaped like its input, or an "
    "object keyed by the model's feature names (its metadata lists them)",
    "oneOf": [
        {"type": "array", "minItems": 1, "items": {"oneOf": [{"type": "number"}, {"type": "array", "items": {}}]}},
        {"type": "object", "minProperties": 1, "additionalProperties": {"type": "number"}},
    ],
}
_RECEIPT_REF = {"$ref": "#/components/schemas/Receipt"}
_RECEIPTS_FLAG = {"type": "boolean", "description": "true: a signed receipt per row (needs --receipts-key-file)"}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_HEX16 = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
_TENSOR_PARAMETERS = {
    "type": "object",
    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
    "description": "binary_data_size: this tensor's bytes follow the JSON header (binary tensor extension)",
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "V1PredictRequest": {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "minItems": 1, "items": _ROW}},
        "example": {"instances": [[0.0] * 4]},
    },
    "V1PredictResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "predictions"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["label", "probabilities", "logits"],
                    "properties": {
                        "label": {"type": "string"},
                        "probabilities": _NUMBERS,
                        "logits": _NUMBERS,
                        "receipt": _RECEIPT_REF,
                    },
                },
            },
        },
    },
    "V1Live": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "V1ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "string"}}},
    },
    "V1ModelStatus": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "parameters": {"type": "object", "description": "The model's metadata, as in V2 `parameters`"},
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_output": {"type": "boolean"}, "receipts": _RECEIPTS_FLAG},
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string", "enum": ["input"]},
                        "shape": {"type": "array", "items": {"type": "integer"}, "description": "[rows, ...]"},
                        "datatype": {"type": "string", "enum": ["FP32", "FP64", "INT32", "INT64"]},
                        "data": {"type": "array", "items": {}, "description": "Row-major values, flat or nested"},
                        "parameters": _TENSOR_PARAMETERS,
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": ["logits", "probabilities", "class_index", "label"]},
                        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                    },
                },
            },
        },
        "example": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}]},
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "checkpoint_sha256": {"type": "string"},
                    "receipts": {"type": "array", "items": _RECEIPT_REF, "description": "One per row, when asked"},
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string", "enum": ["FP32", "INT64", "BYTES"]},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "data": {"type": "array", "items": {}},
                        "parameters": _TENSOR_PARAMETERS,
                    },
                },
            },
        },
    },
    "V2ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "V2ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "parameters"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "parameters": {"type": "object", "description": "Checkpoint, self-test, environment, training"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2TensorMetadata"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2TensorMetadata"}},
        },
    },
    "V2TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "V2ModelReady": {
        "type": "object",
        "required": ["name", "version", "ready"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "ready": {"type": "boolean"},
            "error": {"type": "string", "description": "Why the model is not ready (with status 503)"},
        },
    },
    "RepositoryIndexRequest": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "version", "state", "reason"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string", "enum": ["READY", "LOADING", "UNAVAILABLE", "UNLOADING"]},
                "reason": {"type": "string"},
            },
        },
    },
    "RepositoryLoadRequest": {
        "type": "object",
        "properties": {"parameters": {"type": "object", "description": "Not supported: must be absent or {}"}},
    },
    "RepositoryModel": {
        "type": "object",
        "required": ["name", "versions"],
        "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}}},
    },
    "Receipt": {
        "type": "object",
        "description": "A signed record of one answered row (docs/receipts.md): no raw input, only digests",
        "additionalProperties": False,
        "required": [
            "format",
            "model",
            "version",
            "checkpoint_sha256",
            "fingerprint",
            "numerics",
            "request_id",
            "row",
            "input_sha256",
            "output_sha256",
            "time",
            "key_id",
            "signature",
        ],
        "properties": {
            "format": {"type": "string", "enum": ["invariant-receipt/1"]},
            "model": {"type": "string"},
            "version": {"type": "string"},
            "checkpoint_sha256": _HEX64,
            "fingerprint": _HEX16,
            "numerics": {"type": "object", "description": "The fingerprint's parts, C (chunk_rows) included"},
            "request_id": {"type": "string", "description": "The V2 id, or one the server made"},
            "row": {"type": "integer", "minimum": 0, "description": "The row's index in its request"},
            "input_sha256": {**_HEX64, "description": "sha256 of the row's float32 little-endian bytes"},
            "output_sha256": {**_HEX64, "description": "sha256 of logits, probabilities (float32 LE), class (int64)"},
            "time": {"type": "string", "description": "UTC, ISO 8601"},
            "key_id": _HEX16,
            "signature": {**_HEX64, "description": "HMAC-SHA256 over the canonical JSON of the other fields"},
        },
    },
    "ReceiptVerifyRequest": {
        "type": "object",
        "required": ["receipt", "input"],
        "properties": {"receipt": _RECEIPT_REF, "input": _ROW},
    },
    "ReceiptVerdict": {
        "type": "object",
        "required": ["result", "reason", "detail"],
        "properties": {
            "result": {"type": "string", "enum": ["match", "mismatch"]},
            "reason": {
                "type": ["string", "null"],
                "enum": [None, "bad_signature", "unknown_checkpoint", "other_fingerprint", "other_input", "other_bits"],
            },
            "detail": {"type": "string"},
            "differing_parts": {
                "type": "object",
                "description": "other_fingerprint: each differing numerics part, {receipt: ..., here: ...}",
            },
        },
    },
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
}

V1_PREDICT = Doc(
    "Predict: one answer per row, bitwise independent of the batch",
    V1_TAG,
    "V1PredictResponse",
    request="V1PredictRequest",
    model_headers=True,
    errors=INFERENCE_ERRORS,
    description="With the header X-Receipts: true or the query ?receipts=true, each prediction carries a signed "
    "receipt (needs --receipts-key-file; docs/receipts.md).",
)
V1_PREDICT_LABEL = Doc(
    "Predict with the version a label names (labels.json, e.g. stable or canary), as TF Serving's labels",
    V1_TAG,
    "V1PredictResponse",
    request="V1PredictRequest",
    model_headers=True,
    errors=INFERENCE_ERRORS,
)
V1_LIVE = Doc("KServe V1 liveness: the process answers", V1_TAG, "V1Live")
V1_MODELS = Doc("The served model names", V1_TAG, "V1ModelList")
V1_MODEL = Doc("Whether the latest version of a model serves", V1_TAG, "V1ModelStatus", errors=MODEL_ERRORS)
V2_INFER = Doc(
    "Infer: JSON tensors or the binary tensor extension (Inference-Header-Content-Length)",
    V2_TAG,
    "V2InferResponse",
    request="V2InferRequest",
    binary=True,
    model_headers=True,
    errors=INFERENCE_ERRORS,
)
V2_SERVER = Doc("Server metadata and protocol extensions", V2_TAG, "V2ServerMetadata")
V2_LIVE = Doc("Liveness: the process answers", V2_TAG, "Live")
V2_READY = Doc("Readiness: at least one model serves", V2_TAG, "Ready", errors=(503,))
V2_MODEL = Doc("Model metadata: inputs, outputs, checkpoint, self-test", V2_TAG, "V2ModelMetadata", errors=(404,))
V2_MODEL_READY = Doc("Whether a model version serves", V2_TAG, "V2ModelReady", errors=(404, 503))
REPOSITORY_INDEX = Doc(
    "Every version on disk or loaded, with its state and reason",
    REPOSITORY_TAG,
    "RepositoryIndex",
    request="RepositoryIndexRequest",
    optional_body=True,
    errors=BODY_ERRORS,
)
REPOSITORY_LOAD = Doc(
    "Load (or reload) a model as the version policy says (--model-control explicit)",
    REPOSITORY_TAG,
    "RepositoryModel",
    request="RepositoryLoadRequest",
    optional_body=True,
    errors=BODY_ERRORS,
)
REPOSITORY_UNLOAD = Doc(
    "Unload a model: its versions drain, then stop (--model-control explicit)",
    REPOSITORY_TAG,
    "RepositoryModel",
    request="RepositoryLoadRequest",
    optional_body=True,
    errors=BODY_ERRORS,
)
RECEIPTS_VERIFY = Doc(
    "Verify a receipt: its signature, then its row recomputed alone on this server",
    V2_TAG,
    "ReceiptVerdict",
    request="ReceiptVerifyRequest",
    errors=(*BODY_ERRORS, 503),
    description="Checks, in order: the signature (bad_signature), the model version and checkpoint "
    "(unknown_checkpoint), the numerics fingerprint (other_fingerprint, with the differing parts), the input's "
    "digest (other_input), then recomputes the row alone and compares the output bits (other_bits). Receipts "
    "are asked for with the header X-Receipts: true or ?receipts=true (V1), parameters.receipts (V2).",
)
METRICS = Doc("Prometheus metrics", response=None, media="text/plain")
OPENAPI = Doc("This document", response=None)
DOCS_PAGE = Doc("This page (Swagger UI, served from the package, no CDN)", response=None, media="text/html")
DOCS_ASSET = Doc("A Swagger UI file (script, style sheet or icon)", response=None, media="*/*", errors=(404,))
