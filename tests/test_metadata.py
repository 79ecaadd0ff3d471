"""Model metadata (service/protocols/metadata.py): the same object in V2 metadata `parameters` and on the V1
model route, with the architecture config, classes, features and training summary from the manifest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from conftest import start_server, stop_server

from models import InputSpec, Manifest, MLPConfig, build_model, save_checkpoint

BATCH_NORM = MLPConfig(in_features=3, num_classes=2, hidden=(8, 4), norm="batch", dropout=0.25)
LAYER_NORM = MLPConfig(in_features=3, num_classes=2, hidden=(8, 4), norm="layer", dropout=0.0)
EPOCHS = tuple(
    {"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "val_loss": v, "val_accuracy": a, "seconds": 0.1}
    for e, v, a in [(1, 0.7, 0.5), (2, 0.4, 0.75), (3, 0.6, 0.625)]
)


def write(repository: Path, name: str, config: MLPConfig, training: dict[str, Any]) -> None:
    torch.manual_seed(0)
    manifest = Manifest(
        name=name,
        version=0,
        architecture=config,
        input=InputSpec(shape=(3,), feature_names=("alcohol", "ash", "hue")),
        class_labels=("red", "white"),
        training=training,
        epochs=EPOCHS,
        final_metrics={"train_loss": 0.5, "train_accuracy": 0.5, "val_loss": 0.4, "val_accuracy": 0.75},
    )
    model = build_model(config).train()
    with torch.no_grad():
        model(torch.randn(16, 3))  # running statistics updated, as training would
    save_checkpoint(repository, model.eval(), manifest)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    repository = tmp_path_factory.mktemp("metadata-repository")
    record = {"optimizer": "sgd", "lr": 0.1, "seed": 3, "keep": "best", "kept_epoch": 2, "data_source": {"kind": "csv"}}
    write(repository, "bn", BATCH_NORM, record)
    write(repository, "ln", LAYER_NORM, {"source": "tests"})  # written before --keep existed: the last epoch
    running = start_server(repository, tmp_path_factory.mktemp("logs"))
    with running.client() as client:
        yield client
    stop_server(running)


def test_v1_model_route_and_v2_metadata_publish_the_same_parameters(http: httpx.Client) -> None:
    for name in ("bn", "ln"):
        v2 = http.get(f"/v2/models/{name}").json()["parameters"]
        v1 = http.get(f"/v1/models/{name}")
        assert v1.status_code == 200
        assert v1.json() == {"name": name, "ready": True, "parameters": v2}
        assert http.get(f"/v2/models/{name}/versions/1").json()["parameters"] == v2


def test_batch_norm_and_layer_norm_models_can_be_told_apart(http: httpx.Client) -> None:
    bn = http.get("/v2/models/bn").json()["parameters"]
    ln = http.get("/v2/models/ln").json()["parameters"]
    assert bn["architecture"] == {
        "arch": "mlp",
        "in_features": 3,
        "num_classes": 2,
        "hidden": [8, 4],
        "norm": "batch",
        "dropout": 0.25,
        "bn_momentum": 0.1,
        "track_running_stats": True,
    }
    assert (ln["architecture"]["norm"], ln["architecture"]["dropout"]) == ("layer", 0.0)
    for parameters in (bn, ln):
        assert parameters["class_labels"] == ["red", "white"]
        assert parameters["feature_names"] == ["alcohol", "ash", "hue"]
        assert parameters["input_shape"] == [3]


def test_training_summary_names_the_kept_epoch_and_its_validation_figures(http: httpx.Client) -> None:
    bn = http.get("/v2/models/bn").json()["parameters"]["training"]
    assert bn == {
        "epochs_run": 3,
        "kept_epoch": 2,
        "keep": "best",
        "val_accuracy": 0.75,
        "val_loss": 0.4,
        "optimizer": "sgd",
        "lr": 0.1,
        "seed": 3,
        "data": "csv",
    }
    ln = http.get("/v2/models/ln").json()["parameters"]["training"]
    assert ln == {"epochs_run": 3, "kept_epoch": 3, "keep": "last", "val_accuracy": 0.75, "val_loss": 0.4}
