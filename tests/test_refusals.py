"""Each refusal reason, with a doctored checkpoint: one server over a repository holding a good model, an
undoctored re-saved copy, and one doctored copy per reason. The doctored models are refused with their reason
(readiness 503, metadata state "UNAVAILABLE", predict 503, the log) while the good ones serve."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from checkpoints import write_checkpoint
from conftest import RunningServer, start_server, stop_server
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
ROW = [0.25 * i - 2.0 for i in range(16)]
# The tiny MLP's blocks: Linear(0) BatchNorm1d(1) ReLU(2) Dropout(3) Linear(4) BatchNorm1d(5) ReLU(6) Dropout(7).
BATCHNORMS = ("blocks.1", "blocks.5")

State = dict[str, torch.Tensor]
Manifest = dict[str, object]


def read_manifest(version_dir: Path) -> Manifest:
    manifest: Manifest = json.loads((version_dir / MANIFEST).read_text())
    return manifest


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    (version_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_version(good: Path, repository: Path, name: str) -> Path:
    """The good version directory copied as version 1 of `name`."""
    target = repository / name / "1"
    shutil.copytree(good, target)
    manifest = read_manifest(target)
    manifest["name"] = name
    write_manifest(target, manifest)
    return target


def rewrite_weights(version_dir: Path, edit: Callable[[State], State]) -> None:
    """Load the weights, edit them, save them back, and make the manifest's checksum match the new file."""
    path = version_dir / WEIGHTS
    save_file({key: tensor.contiguous() for key, tensor in edit(load_file(str(path))).items()}, str(path))
    manifest = read_manifest(version_dir)
    manifest["weights_sha256"] = sha256(path)
    write_manifest(version_dir, manifest)


# --- one doctor per refusal reason: (version_dir) -> the exact reason the server must give ---------------


def flip_a_weights_byte(version_dir: Path) -> str:
    path = version_dir / WEIGHTS
    expected = read_manifest(version_dir)["weights_sha256"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte belongs to the tensor data, not the safetensors header
    path.write_bytes(bytes(data))
    return f"checksum mismatch: {WEIGHTS} has sha256 {sha256(path)}, manifest says {expected}"


def drop_running_statistics(version_dir: Path) -> str:
    def edit(state: State) -> State:
        return {k: v for k, v in state.items() if not k.endswith((".running_mean", ".running_var"))}

    rewrite_weights(version_dir, edit)
    dropped = sorted(f"{layer}.{stat}" for layer in BATCHNORMS for stat in ("running_mean", "running_var"))
    return f"BatchNorm running statistics missing from the weights: {dropped}"


def untrack_running_statistics(version_dir: Path) -> str:
    """What a model built with track_running_stats=False saves: no running stats buffers at all."""
    manifest = read_manifest(version_dir)
    architecture = manifest["architecture"]
    assert isinstance(architecture, dict)
    assert architecture["track_running_stats"] is True
    architecture["track_running_stats"] = False
    write_manifest(version_dir, manifest)
    buffers = (".running_mean", ".running_var", ".num_batches_tracked")
    rewrite_weights(version_dir, lambda state: {k: v for k, v in state.items() if not k.endswith(buffers)})
    return (
        "BatchNorm layer 'blocks.1' has no running statistics (track_running_stats=False): "
        "it would normalize with batch statistics, so a prediction would depend on its batch"
    )


def nan_running_variance(version_dir: Path) -> str:
    def edit(state: State) -> State:
        state["blocks.5.running_var"][3] = math.nan
        return state

    rewrite_weights(version_dir, edit)
    return "BatchNorm layer 'blocks.5' has non-finite running statistics"


def never_updated_statistics(version_dir: Path) -> str:
    """As a freshly built model: running mean 0, running variance 1, num_batches_tracked 0."""

    def edit(state: State) -> State:
        for layer in BATCHNORMS:
            assert int(state[f"{layer}.num_batches_tracked"]) == 5  # the good checkpoint saw 5 batches
            state[f"{layer}.running_mean"] = torch.zeros_like(state[f"{layer}.running_mean"])
            state[f"{layer}.running_var"] = torch.ones_like(state[f"{layer}.running_var"])
            state[f"{layer}.num_batches_tracked"] = torch.zeros_like(state[f"{layer}.num_batches_tracked"])
        return state

    rewrite_weights(version_dir, edit)
    return "BatchNorm layer 'blocks.1' running statistics were never updated (num_batches_tracked == 0)"


def infinite_linear_weight(version_dir: Path) -> str:
    def edit(state: State) -> State:
        state["blocks.4.weight"][2, 7] = math.inf
        return state

    rewrite_weights(version_dir, edit)
    return "weight 'blocks.4.weight' has non-finite values"


def unknown_format_version(version_dir: Path) -> str:
    manifest = read_manifest(version_dir)
    assert manifest["format_version"] == 1
    manifest["format_version"] = 99
    write_manifest(version_dir, manifest)
    return "unknown manifest format_version 99 (this server reads 1)"


def remove_the_weights(version_dir: Path) -> str:
    (version_dir / WEIGHTS).unlink()
    return f"missing weights file {WEIGHTS}"


def truncate_the_manifest(version_dir: Path) -> str:
    (version_dir / MANIFEST).write_text('{"name": ')
    return f"unreadable manifest {MANIFEST}: Expecting value: line 1 column 10 (char 9)"


DOCTORS: dict[str, Callable[[Path], str]] = {
    "checksum": flip_a_weights_byte,
    "missing-stats": drop_running_statistics,
    "untracked-stats": untrack_running_statistics,
    "nan-stats": nan_running_variance,
    "never-updated": never_updated_statistics,
    "inf-weight": infinite_linear_weight,
    "format-99": unknown_format_version,
    "no-weights": remove_the_weights,
    "broken-manifest": truncate_the_manifest,
}


@dataclass
class Refusals:
    server: RunningServer
    reasons: dict[str, str]  # doctored model name -> the exact reason
    repository: Path


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refusals]:
    repository = tmp_path_factory.mktemp("refusal-repository")
    good = write_checkpoint(repository, "good")
    # Control: the copy-and-resave path itself yields a model that serves.
    rewrite_weights(copy_version(good, repository, "resaved"), lambda state: state)
    reasons = {name: doctor(copy_version(good, repository, name)) for name, doctor in DOCTORS.items()}
    running = start_server(repository, tmp_path_factory.mktemp("logs"))
    yield Refusals(running, reasons, repository)
    stop_server(running)


@pytest.fixture
def http(refusals: Refusals) -> Iterator[httpx.Client]:
    with refusals.server.client() as client:
        yield client


@pytest.mark.parametrize("name", ["good", "resaved"])
def test_good_models_serve_beside_the_refused_ones(http: httpx.Client, name: str) -> None:
    assert http.get("/v2/health/ready").json() == {"ready": True}
    ready = http.get(f"/v2/models/{name}/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"name": name, "version": "1", "ready": True}
    parameters = http.get(f"/v2/models/{name}").json()["parameters"]
    assert (parameters["state"], parameters["reason"]) == ("READY", "")
    response = http.post(f"/v1/models/{name}:predict", json={"instances": [ROW, ROW]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    assert predictions[0] == predictions[1]


def test_resaved_copy_answers_the_same_bits_as_the_good_model(http: httpx.Client) -> None:
    answers = [http.post(f"/v1/models/{m}:predict", json={"instances": [ROW]}) for m in ("good", "resaved")]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["predictions"] == answers[1].json()["predictions"]


@pytest.mark.parametrize("name", list(DOCTORS))
def test_doctored_checkpoint_is_refused_with_its_reason(refusals: Refusals, http: httpx.Client, name: str) -> None:
    reason = refusals.reasons[name]

    for path in (f"/v2/models/{name}/ready", f"/v2/models/{name}/versions/1/ready"):
        ready = http.get(path)
        assert ready.status_code == 503, ready.text
        assert ready.json() == {
            "name": name,
            "version": "1",
            "ready": False,
            "error": f"model {name!r} is not ready: {reason}",
        }

    metadata = http.get(f"/v2/models/{name}")
    assert metadata.status_code == 200, metadata.text
    parameters = metadata.json()["parameters"]
    assert parameters["state"] == "UNAVAILABLE"
    assert parameters["reason"] == reason
    assert "self_test" not in parameters  # refused before any self-test ran

    status = http.get(f"/v1/models/{name}")
    assert status.status_code == 200, status.text
    assert status.json() == {"name": name, "ready": False, "parameters": parameters}

    not_served = f"model {name!r} version 1 is not served: {reason}"
    predict = http.post(f"/v1/models/{name}:predict", json={"instances": [ROW]})
    assert predict.status_code == 503, predict.text
    assert predict.json() == {"error": not_served}
    infer = http.post(
        f"/v2/models/{name}/infer",
        json={"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]},
    )
    assert infer.status_code == 503, infer.text
    assert infer.json() == {"error": not_served}

    assert f"ERROR invariant.registry: model {name} version 1 REFUSED: {reason}\n" in refusals.server.log()

    # The good model keeps serving after each refusal answer.
    assert http.post("/v1/models/good:predict", json={"instances": [ROW]}).status_code == 200


def test_refusals_are_expected_failures_not_crashes(refusals: Refusals) -> None:
    log = refusals.server.log()
    assert log.count(" REFUSED: ") == len(DOCTORS)
    assert "Traceback" not in log
    assert "internal error while loading" not in log


def test_no_answer_names_a_server_path(refusals: Refusals, http: httpx.Client) -> None:
    """Clients get the model's name and the reason, never the server's file layout (issue 11, defect 11)."""
    root = str(refusals.repository.resolve().parent)
    for name in DOCTORS:
        for answer in (
            http.get(f"/v2/models/{name}/ready"),
            http.get(f"/v2/models/{name}"),
            http.post(f"/v1/models/{name}:predict", json={"instances": [ROW]}),
        ):
            assert answer.status_code in (200, 503)
            assert root not in answer.text, answer.text
