"""Renders the pods KServe makes from the InferenceServices (deploy/k8s/kserve/) as Deployments, so that
`make deploy-lint` (checkov, which does not know KServe's custom resources) checks their containers, volumes and
security contexts like those of the plain manifests.

    python deploy/kserve_pods.py OUT_DIR     # writes OUT_DIR/<kind>-<name>.yaml, one per KServe object
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

KSERVE = Path(__file__).resolve().parent / "k8s" / "kserve"
# PodSpec fields a ServingRuntime or an InferenceService predictor may carry (the rest are KServe's own).
# tests/kserve_schemas.py allows exactly these in the manifests, so a field the renderer drops cannot pass.
POD_FIELDS = (
    "containers",
    "volumes",
    "securityContext",
    "terminationGracePeriodSeconds",
    "automountServiceAccountToken",
    "serviceAccountName",
    "nodeSelector",
    "tolerations",
    "affinity",
    "imagePullSecrets",
)


def pod_spec(doc: dict[str, Any], runtimes: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The pod KServe makes for an InferenceService: its predictor's pod fields, over those of its
    ServingRuntime when the predictor names a model (None for a ServingRuntime itself)."""
    if doc["kind"] != "InferenceService":
        return None
    predictor = doc["spec"]["predictor"]
    base = runtimes[predictor["model"]["runtime"]]["spec"] if "model" in predictor else {}
    merged = {key: value for key, value in base.items() if key in POD_FIELDS}
    return merged | {key: value for key, value in predictor.items() if key in POD_FIELDS}


def as_deployment(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    name = f"{doc['kind'].lower()}-{doc['metadata']['name']}"
    labels = {"serving.kserve.io/inferenceservice": doc["metadata"]["name"]}  # as KServe labels the pods
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": doc["metadata"].get("annotations", {})},
                "spec": spec,
            },
        },
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    docs = [
        (path, doc) for path in sorted(KSERVE.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc
    ]
    runtimes = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "ServingRuntime"}
    # The NetworkPolicies that select those pods, copied beside them (checkov relates the two).
    policies = [doc for _, doc in docs if doc["kind"] == "NetworkPolicy"]
    (out / "network-policy.yaml").write_text(yaml.safe_dump_all(policies))
    for path, doc in docs:
        spec = pod_spec(doc, runtimes)
        if spec is not None:
            rendered = as_deployment(doc, spec)
            target = out / f"{rendered['metadata']['name']}.yaml"
            target.write_text(f"# rendered from {path.name} by deploy/kserve_pods.py\n" + yaml.safe_dump(rendered))
            print(f"kserve pods: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
