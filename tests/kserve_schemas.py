"""JSON Schemas of the KServe objects in deploy/k8s/kserve/, for offline validation in the tests.

Written for this project from KServe's API reference (serving.kserve.io v1beta1 InferenceService, v1alpha1
ServingRuntime), not copied from KServe's CRDs, and stricter than them: only the fields the manifests may use
are allowed, so a misspelled or misplaced key fails. The pod-level fields inside them (containers, volumes,
securityContext, ...) are validated separately against Kubernetes' own schemas (kubernetes-validate).
Why not the `kserve` SDK's model classes: the SDK (0.21.0) pulls pandas, grpcio, grpcio-tools, the
kubernetes client, cryptography and pillow into the dev environment, and its classes do not validate.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy"))
# The renderer's list: the pod fields the schemas allow are exactly those it carries into the checked pods.
from kserve_pods import POD_FIELDS

_OBJECT: dict[str, Any] = {"type": "object"}
_POD_PROPERTIES: dict[str, Any] = {name: {} for name in POD_FIELDS}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_MODEL_FORMAT: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
}

INFERENCE_SERVICE: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "additionalProperties": False,
                    # A predictor is either a model (served by a ServingRuntime) or custom containers.
                    "oneOf": [{"required": ["model"]}, {"required": ["containers"]}],
                    "properties": {
                        **_POD_PROPERTIES,
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "containerConcurrency": {"type": "integer", "minimum": 0},
                        "timeout": {"type": "integer", "minimum": 1},
                        "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
                        "labels": _STRING_MAP,
                        "annotations": _STRING_MAP,
                        "model": {
                            "type": "object",
                            "required": ["modelFormat"],
                            "additionalProperties": False,
                            "properties": {
                                "modelFormat": _MODEL_FORMAT,
                                "runtime": {"type": "string"},
                                "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                                "storageUri": {"type": "string", "pattern": "^(pvc|s3|gs|https?|hf|oci)://"},
                            },
                        },
                    },
                }
            },
        },
    },
}

SERVING_RUNTIME: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"const": "ServingRuntime"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["containers", "supportedModelFormats"],
            "additionalProperties": False,
            "properties": {
                **_POD_PROPERTIES,
                "supportedModelFormats": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "autoSelect": {"type": "boolean"},
                            "priority": {"type": "integer", "minimum": 1},
                        },
                    },
                },
                "protocolVersions": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                },
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
    },
}
