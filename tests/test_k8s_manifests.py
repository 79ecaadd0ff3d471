"""The Kubernetes and KServe manifests (deploy/k8s/) validate offline, and agree with the server: ports,
probe paths, setting names, drain time, non-root user; the compose file and the balancer agree too."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, write_keys
from kserve_schemas import INFERENCE_SERVICE, SERVING_RUNTIME

from service.http.app import create_app
from service.http.auth import KeyFileError, read_keys
from service.settings import Settings

sys.path.insert(0, str(ROOT / "deploy"))  # deploy/lint.py, imported by name like the bench modules
from kserve_pods import POD_FIELDS
from lint import reviewed_skips

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33"  # lifecycle.preStop.sleep needs >= 1.30
APP_UID = 10001  # the Dockerfile's USER


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in documents(path):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


MANIFESTS = by_kind()
CORE = {key: doc for key, doc in MANIFESTS.items() if "kserve.io" not in doc["apiVersion"]}
KSERVE = {key: doc for key, doc in MANIFESTS.items() if "kserve.io" in doc["apiVersion"]}


def as_pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The PodSpec fields embedded in a KServe object, as a Pod kubernetes-validate can check."""
    pod_spec = {key: value for key, value in spec.items() if key in POD_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


def test_every_manifest_kind_is_there() -> None:
    assert sorted(MANIFESTS) == [
        "Deployment/invariant-serve",
        "HorizontalPodAutoscaler/invariant-serve",
        "InferenceService/invariant-digits",
        "InferenceService/invariant-digits-runtime",
        "Job/invariant-train-digits",
        "NetworkPolicy/invariant-digits",
        "NetworkPolicy/invariant-digits-runtime",
        "NetworkPolicy/invariant-serve-server",
        "NetworkPolicy/invariant-train-no-network",
        "PersistentVolumeClaim/invariant-models",
        "PodDisruptionBudget/invariant-serve",
        "Service/invariant-serve",
        "ServingRuntime/invariant-serve",
    ]


@pytest.mark.parametrize("key", sorted(CORE))
def test_core_manifests_validate_strictly(key: str) -> None:
    assert kubernetes_validate.validate(CORE[key], KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_strict_validation_catches_a_misspelled_field() -> None:
    broken = copy.deepcopy(CORE["Deployment/invariant-serve"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("key", sorted(KSERVE))
def test_kserve_objects_validate_against_their_schema_and_kubernetes(key: str) -> None:
    doc = KSERVE[key]
    schema = INFERENCE_SERVICE if doc["kind"] == "InferenceService" else SERVING_RUNTIME
    jsonschema.validate(doc, schema)
    spec = doc["spec"]["predictor"] if doc["kind"] == "InferenceService" else doc["spec"]
    if "containers" in spec:
        pod = as_pod(doc["metadata"]["name"], spec)
        assert kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_kserve_schema_catches_a_misplaced_field() -> None:
    broken = copy.deepcopy(KSERVE["InferenceService/invariant-digits"])
    broken["spec"]["predictor"]["protocolVersion"] = "v2"  # belongs to a ServingRuntime or a model
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, INFERENCE_SERVICE)


def server_containers() -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, str]]]:
    """(container, pod spec, annotations) of every manifest that runs the server."""
    deployment = MANIFESTS["Deployment/invariant-serve"]["spec"]["template"]
    custom = MANIFESTS["InferenceService/invariant-digits"]
    runtime = MANIFESTS["ServingRuntime/invariant-serve"]
    return {
        "deployment": (deployment["spec"]["containers"][0], deployment["spec"], deployment["metadata"]["annotations"]),
        "kserve custom container": (
            custom["spec"]["predictor"]["containers"][0],
            custom["spec"]["predictor"],
            custom["metadata"]["annotations"],
        ),
        "kserve runtime": (runtime["spec"]["containers"][0], runtime["spec"], runtime["metadata"]["annotations"]),
    }


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def test_manifests_match_the_servers_settings_ports_and_paths() -> None:
    app = create_app(Settings())
    paths = {route.path for route in app.routes}
    assert {"/v2/health/ready", "/v2/health/live", "/metrics"} <= paths
    for where, (container, pod, pod_annotations) in server_containers().items():
        env = env_of(container)
        unknown = {name[len("INVARIANT_") :].lower() for name in env} - set(Settings.model_fields)
        assert not unknown, f"{where}: INVARIANT_* variables that are no setting: {unknown}"
        port = int(env["INVARIANT_PORT"])
        grpc_port = int(env["INVARIANT_GRPC_PORT"])
        assert grpc_port not in (0, port), where
        assert [p["containerPort"] for p in container["ports"]] == [port, grpc_port], where
        assert env["INVARIANT_HOST"] == "0.0.0.0", where
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", where
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", where
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                assert port_number(container, container[probe]["httpGet"]["port"]) == port, f"{where} {probe}"
        prometheus_port = pod_annotations.get("prometheus.io/port") or pod_annotations.get("prometheus.kserve.io/port")
        prometheus_path = pod_annotations.get("prometheus.io/path") or pod_annotations.get("prometheus.kserve.io/path")
        assert (prometheus_port, prometheus_path) == (str(port), "/metrics"), where
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
        user = pod.get("securityContext", {}).get("runAsUser") or container["securityContext"].get("runAsUser")
        assert user == APP_UID, where
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[env["INVARIANT_API_KEYS_FILE"].rsplit("/", 1)[0]]["readOnly"] is True, where


def test_kserve_container_rules() -> None:
    for where in ("kserve custom container", "kserve runtime"):
        container = server_containers()[where][0]
        assert container["name"] == "kserve-container"
        assert [p["containerPort"] for p in container["ports"]] == [8080, 8081]
        assert container["ports"][1]["name"] == "h2c"  # KServe: the gRPC port of a custom container
    assert MANIFESTS["ServingRuntime/invariant-serve"]["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    custom = MANIFESTS["InferenceService/invariant-digits"]["metadata"]["annotations"]
    assert custom["serving.kserve.io/enable-prometheus-scraping"] == "true"


def test_draining_fits_in_the_termination_grace_period() -> None:
    settings = Settings()
    for where, (container, pod, _) in server_containers().items():
        if "lifecycle" not in container:
            continue
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        # The server waits up to request_timeout_s + 5 for requests in flight (service/cli.py).
        drain = settings.request_timeout_s + 5
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain, where


def test_service_hpa_pdb_and_job_point_at_the_deployment_and_volume() -> None:
    deployment = MANIFESTS["Deployment/invariant-serve"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = MANIFESTS["Service/invariant-serve"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    assert (service["ports"][1]["targetPort"], service["ports"][1]["appProtocol"]) == ("grpc", "kubernetes.io/h2c")
    assert MANIFESTS["PodDisruptionBudget/invariant-serve"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = MANIFESTS["HorizontalPodAutoscaler/invariant-serve"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "invariant-serve")
    claim = "invariant-models"
    job = MANIFESTS["Job/invariant-train-digits"]["spec"]["template"]["spec"]
    job_volume = next(v for v in job["volumes"] if v["name"] == "models")
    assert job_volume["persistentVolumeClaim"]["claimName"] == claim
    server_volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert server_volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    assert env_of(job["containers"][0])["INVARIANT_REPOSITORY"] == "/models"


def test_compose_and_balancer_check_the_same_readiness_path_and_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["server"]
    assert "ports" not in server  # only the balancer publishes a port
    assert "/v2/health/ready" in " ".join(server["healthcheck"]["test"])
    haproxy = (ROOT / "deploy" / "balancer" / "haproxy.cfg").read_text()
    assert re.search(r"^\s*option httpchk GET /v2/health/ready$", haproxy, re.M)
    template = re.search(r"^\s*server-template \S+ \S+ server:(\d+)$", haproxy, re.M)
    assert template is not None
    assert template.group(1) == server["environment"]["INVARIANT_PORT"]
    bind = re.search(r"^\s*bind :(\d+)$", haproxy, re.M)
    assert bind is not None
    grpc_bind = re.search(r"^\s*bind :(\d+) proto h2$", haproxy, re.M)
    grpc_template = re.search(r"^\s*server-template \S+ \S+ server:(\d+) proto h2 check-proto h1$", haproxy, re.M)
    assert grpc_bind is not None
    assert grpc_template is not None
    assert grpc_template.group(1) == server["environment"]["INVARIANT_GRPC_PORT"]
    assert compose["services"]["balancer"]["ports"] == [
        "127.0.0.1:${INVARIANT_HOST_PORT:-8000}:" + bind.group(1),
        "127.0.0.1:${INVARIANT_HOST_GRPC_PORT:-8001}:" + grpc_bind.group(1),
    ]


# ---------------------------------------------------------------------------------------------- issue 28


def test_the_example_secret_holds_no_object_and_its_placeholder_keys_are_refused(tmp_path: Path) -> None:
    """Applied as-is, the example served publicly known keys: now it is not appliable (no object, so `kubectl
    apply` fails with "no objects passed to apply"), and the server refuses its placeholders."""
    text = (K8S / "secret.example.yaml").read_text()
    assert [doc for doc in yaml.safe_load_all(text) if doc] == []
    commented = text[text.index("# apiVersion:") :].splitlines()
    shape = yaml.safe_load("\n".join(line.removeprefix("# ").removeprefix("#") for line in commented))
    assert shape["kind"] == "Secret"
    for name, keys in shape["stringData"].items():
        path = tmp_path / name
        write_keys(path, keys)
        with pytest.raises(KeyFileError, match=r"line 2: a key is a documented placeholder"):
            read_keys(path)


def pod_of(where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(container, pod spec) of a server pod; the ServingRuntime's pod takes its pod-level fields from the
    InferenceService that uses it (KServe merges them)."""
    container, pod, _ = server_containers()[where]
    if where == "kserve runtime":
        predictor = MANIFESTS["InferenceService/invariant-digits-runtime"]["spec"]["predictor"]
        assert predictor["model"]["runtime"] == MANIFESTS["ServingRuntime/invariant-serve"]["metadata"]["name"]
        pod = {**pod, **{key: value for key, value in predictor.items() if key in POD_FIELDS}}
    return container, pod


@pytest.mark.parametrize("where", ["deployment", "kserve custom container", "kserve runtime"])
def test_every_server_pod_has_seccomp_a_startup_probe_and_a_writable_tmp(where: str) -> None:
    container, pod = pod_of(where)
    seccomp = container["securityContext"].get("seccompProfile") or pod["securityContext"].get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}, where
    assert pod["automountServiceAccountToken"] is False, where
    # The process listens once its models are loaded and self-tested: the startup probe allows for that
    # (3 minutes) before liveness starts; without it a slow load is killed in a loop.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/live", where
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, where
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp")
    volume = next(volume for volume in pod["volumes"] if volume["name"] == tmp["name"])
    assert "sizeLimit" in volume["emptyDir"], where


@pytest.mark.parametrize("where", ["deployment", "kserve custom container", "kserve runtime"])
def test_key_files_are_mounted_as_the_server_accepts_them(where: str) -> None:
    """service/keyfile.py refuses key files others can read: each pod mounts its secrets group-readable for
    the server's group (fsGroup), so the pod starts (issue 20)."""
    _, pod = pod_of(where)
    secrets = [volume for volume in pod["volumes"] if "secret" in volume]
    assert secrets, where
    for volume in secrets:
        assert volume["secret"]["defaultMode"] & 0o007 == 0, where
        assert pod["securityContext"]["fsGroup"] == APP_UID, where


def test_the_training_job_has_no_network_and_a_deadline() -> None:
    job = MANIFESTS["Job/invariant-train-digits"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 4 * 3600
    policy = MANIFESTS["NetworkPolicy/invariant-train-no-network"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= job["template"]["metadata"]["labels"].items()
    # Both directions listed with no rule at all: nothing in, nothing out (not even DNS).
    assert policy == {"podSelector": policy["podSelector"], "policyTypes": ["Ingress", "Egress"]}


def test_server_pods_take_ingress_on_their_port_only_and_have_no_egress() -> None:
    cases = [
        ("NetworkPolicy/invariant-serve-server", MANIFESTS["Deployment/invariant-serve"]["spec"]["template"], 8000),
        ("NetworkPolicy/invariant-digits", {"metadata": {"labels": {KSERVE_POD_LABEL: "invariant-digits"}}}, 8080),
        (
            "NetworkPolicy/invariant-digits-runtime",
            {"metadata": {"labels": {KSERVE_POD_LABEL: "invariant-digits-runtime"}}},
            8080,
        ),
    ]
    for key, template, port in cases:
        policy = MANIFESTS[key]["spec"]
        assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), key
        assert policy["policyTypes"] == ["Ingress", "Egress"], key
        assert "egress" not in policy, key
        assert policy["ingress"] == [{"ports": [{"port": port, "protocol": "TCP"}]}], key


KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"  # KServe labels each predictor pod with its service


def test_the_deployment_leaves_the_replica_count_to_the_autoscaler() -> None:
    """`replicas: 3` reset the HPA's count (minReplicas 2) on every re-apply."""
    assert "replicas" not in MANIFESTS["Deployment/invariant-serve"]["spec"]
    assert MANIFESTS["HorizontalPodAutoscaler/invariant-serve"]["spec"]["minReplicas"] >= 2


def test_pin_image_rewrites_every_image_to_one_digest_and_refuses_a_tag(tmp_path: Path) -> None:
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S, copy_dir)
    reference = "registry.example/invariant-serve@sha256:" + "ab" * 32
    env = {**os.environ, "K8S_DIR": str(copy_dir)}
    script = str(ROOT / "deploy" / "pin_image.sh")
    done = subprocess.run(["bash", script, reference], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    images = {
        container["image"]
        for path in copy_dir.rglob("*.yaml")
        for doc in documents(path)
        for container in _containers(doc)
    }
    assert images == {reference}
    refused = subprocess.run(
        ["bash", script, "invariant-serve:0.1.0"], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("usage: ")


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    for step in ("template", "spec"):
        spec = spec.get(step, spec)
    return list(spec.get("containers", []) or spec.get("predictor", {}).get("containers", []))


def test_the_deploy_test_prints_the_digest_it_built() -> None:
    script = (ROOT / "deploy" / "deploy_test.sh").read_text()
    assert 'IMAGE_DIGEST="$(docker image inspect -f \'{{.Id}}\' "$INVARIANT_IMAGE")"' in script
    assert 'echo "  image $INVARIANT_IMAGE digest: $IMAGE_DIGEST' in script


def test_every_checkov_skip_carries_its_reason(tmp_path: Path) -> None:
    skips = reviewed_skips()
    assert set(skips) == {"CKV_K8S_11", "CKV_K8S_15", "CKV_K8S_21", "CKV_K8S_43", "CKV_DOCKER_7"}
    unexplained = tmp_path / "skips.txt"
    unexplained.write_text("# header\nCKV_K8S_11\n")
    with pytest.raises(ValueError, match=r"line 2: a skip is CHECK_ID followed by its reason"):
        reviewed_skips(unexplained)
